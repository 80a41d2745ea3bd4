// spin_governor.hpp — when spinning before a sleep pays, and when it only burns CPU.
//
// An idle consumer spins (pause, then sched_yield) before it sleeps on a
// futex, because a sleep costs it a context switch and its producer a wake-up
// call — more than moving a small item.  That pays when the next message
// comes within the spin; when messages come further apart (a paced load: one
// request every millisecond), every spin is wasted CPU, taken from the
// workers that have work.  The governor keeps one consumer's recent waits and
// turns its spin off after a few waits that outlasted the spin window, and
// back on as soon as a wait is short again (a short wait is also what a
// sleep-only wait looks like when messages come back to back, so a stream
// regains its spin at its first burst).
//
// Invariants: single-threaded (one governor per consuming thread);
// spin()/yields() are either the configured budget or zero.
// No memory-ordering concerns: thread-local state.
#pragma once

#include <cstdint>

namespace mps {

class SpinGovernor {
 public:
  // A wait longer than this would not have been saved by the spin budget.
  static constexpr int64_t kWindowNs = 200'000;
  // Consecutive long waits after which the consumer stops spinning.
  static constexpr int kLongWaitsToStop = 3;

  SpinGovernor(int spin, int yields) : spin_(spin), yields_(yields) {}

  void configure(int spin, int yields) {
    spin_ = spin;
    yields_ = yields;
  }
  int spin() const { return long_waits_ >= kLongWaitsToStop ? 0 : spin_; }
  int yields() const { return long_waits_ >= kLongWaitsToStop ? 0 : yields_; }

  // The consumer waited `waited_ns` for its last message (0: it was there).
  void waited(int64_t waited_ns) {
    if (waited_ns <= kWindowNs)
      long_waits_ = 0;
    else if (long_waits_ < kLongWaitsToStop)
      ++long_waits_;
  }

 private:
  int spin_, yields_;
  int long_waits_ = 0;
};

}  // namespace mps
