// ring.hpp (bindings) — the message ring and the claim table as Python sees
// them: push/push_many/gather for worker loops and routers, and the
// thread-local claim binding that makes gather() claim what it takes and
// push() release what it answers (claims.hpp).
//
// Invariants: a PyRing owns its mps::Ring; shared_ptr keeps it alive for as
// long as any holder (servlet, router, guardian, request book) needs it.
// object_refs is the number of readers of the ring: an object message pushed
// there holds that many references.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>

#include "../cpp/cancel_board.hpp"
#include "../cpp/claims.hpp"
#include "../cpp/ring.hpp"

namespace mpb {

namespace py = pybind11;

// Before sleeping on an empty ring: busy-wait rounds, then sched_yield
// rounds, in workers' gather() and in the collector (set_spin()).  The
// collector yields its core before it sleeps by default: a sleep, and the
// futex wake-up every worker push would then pay to end it, cost more than
// handing over the result.
struct SpinSettings {
  int worker_spin = 2000;
  int worker_yields = 0;
  int collector_spin = 0;
  int collector_yields = 100;
};
extern SpinSettings g_spin;

struct PyRing {
  explicit PyRing(std::unique_ptr<mps::Ring> r) : ring(std::move(r)) {}
  std::unique_ptr<mps::Ring> ring;
  int object_refs = 1;  // references an object message pushed here takes (one per reader)

  // Pushes one message; returns a Status (ok, push_timeout, closed).
  int push(uint64_t id, uint32_t flags, py::handle payload, uint64_t aux, py::object timeout);
  // Pushes [(id, flags, payload), ...] in order under one producer lock.
  int push_many(py::list items, uint64_t aux);
  // Pushes a chunk of results (cpp/chunk.hpp) as one message.
  int push_chunk(py::sequence ids, py::bytes status, py::bytes blob, uint64_t aux);
  // Takes the worker's next unit of work (batcher.hpp): a list of
  // (id, flags, aux, payload); [] if idle_timeout passed with nothing; None
  // once the ring is closed and drained.
  py::object gather(size_t max_items, double wait_time, py::object idle_timeout);
};

struct PyClaimTable {
  std::unique_ptr<mps::ClaimTable> table;
};

struct PyCancelBoard {
  std::unique_ptr<mps::CancelBoard> board;
};

void define_ring(py::module_& m);

}  // namespace mpb
