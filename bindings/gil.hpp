// gil.hpp — the bindings' rules for the GIL and for waiting.
//
// Every wait of the engine (a ledger slot, a result, ring space, a worker's
// next item) runs with the GIL released.  Waits made on the interpreter's
// main thread are cut into slices so that a signal handler (Ctrl-C ->
// KeyboardInterrupt) runs within ~50 ms; other threads cannot receive signals
// in Python, so they wait in one piece.  Worker processes ignore SIGINT and
// turn slicing off, so idle workers sleep in one piece instead of waking 20
// times a second.
//
// Invariants: no thread of ours waits for a ring's consumer lock while
// holding the GIL (every consumer releases it first), so a consumer may take
// the GIL while it holds that lock.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>

#include "../cpp/futex.hpp"
#include "../cpp/ring.hpp"

namespace mpb {

namespace py = pybind11;

// Set by the module at import (the interpreter's main thread) and by
// set_signal_checks().
extern unsigned long g_main_thread;
extern bool g_signal_checks;
inline constexpr int64_t kSignalSlice = 50'000'000;

inline bool on_main_thread() { return g_signal_checks && PyThread_get_thread_ident() == g_main_thread; }

// Calls wait(slice_deadline) without the GIL until it returns true or the
// deadline passes (returns false).  Throws error_already_set if a signal
// handler raised; `on_interrupt` runs first (with the GIL) to undo state.
template <class Wait, class Undo>
bool wait_interruptibly(int64_t deadline, Wait&& wait, Undo&& on_interrupt) {
  const bool slice = on_main_thread();
  for (;;) {
    int64_t until = deadline;
    if (slice) {
      int64_t s = mps::now_ns() + kSignalSlice;
      if (s < until) until = s;
    }
    bool done;
    {
      py::gil_scoped_release nogil;
      done = wait(until);
    }
    if (done) return true;
    if (until >= deadline || mps::now_ns() >= deadline) return false;
    if (PyErr_CheckSignals() != 0) {
      on_interrupt();
      throw py::error_already_set();
    }
  }
}

template <class Wait>
bool wait_interruptibly(int64_t deadline, Wait&& wait) {
  return wait_interruptibly(deadline, std::forward<Wait>(wait), [] {});
}

// A Python timeout (seconds, or None for none) as an absolute deadline.
inline int64_t deadline_from(const py::object& timeout) {
  if (timeout.is_none()) return mps::kForever;
  return mps::deadline_after(timeout.cast<double>());
}

// Pushes with the GIL held if there is room now (no thread switch), else
// releases it and waits for room until the deadline.
inline mps::PushStatus push_with_gil_rules(mps::Ring& ring, const mps::OutMessage* msgs, size_t n,
                                           int64_t deadline, size_t* written, int64_t stamp = 0) {
  mps::PushStatus st = ring.try_push(msgs, n, written, stamp);
  if (st != mps::PushStatus::timeout) return st;
  size_t done = written ? *written : 0;
  py::gil_scoped_release nogil;
  size_t more = 0;
  st = ring.push(msgs + done, n - done, deadline, &more, stamp);
  if (written) *written = done + more;
  return st;
}

void define_gil(py::module_& m);

}  // namespace mpb
