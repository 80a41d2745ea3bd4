// exposition.hpp (bindings) — a Python servlet layout (_stats.Layout) as the
// C++ tree cpp/exposition.hpp exposes, for metrics_text() and for the native
// HTTP front's GET /metrics.
#pragma once

#include <pybind11/pybind11.h>

#include <memory>
#include <vector>

#include "../cpp/exposition.hpp"
#include "ring.hpp"

namespace mpb {

namespace py = pybind11;

// The tree and the rings it points to.
struct ExposedTree {
  mps::ExposedServlet root;
  std::vector<std::shared_ptr<PyRing>> rings;
};

ExposedTree exposed_tree(py::handle layout);

void define_exposition(py::module_& m);

}  // namespace mpb
