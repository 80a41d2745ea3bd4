// meter.hpp (bindings) — the meter board as Python sees it (reading records
// for Server.stats() and `python -m mpserver top`), and the thread-local
// binding through which a worker's gather() and push() count into its record
// (cpp/meter.hpp).
//
// Invariants: t_meter is set only by bind_meter() on the worker's own
// thread, and the caller keeps the board alive while it is bound; a thread
// with no binding (a router, the switch thread, a caller) counts nothing.
#pragma once

#include <pybind11/pybind11.h>

#include <memory>

#include "../cpp/meter.hpp"

namespace mpb {

namespace py = pybind11;

struct PyMeterBoard {
  std::unique_ptr<mps::MeterBoard> board;
};

// The record of the worker running on this thread, or null.
extern thread_local mps::MeterRecord* t_meter;

void define_meter(py::module_& m);

}  // namespace mpb
