// batcher.hpp — how a worker takes its next unit of work from its input ring.
//
// Semantics (mpservice's documented batching):
//   * max_items <= 1: one message; the worker waits for it without holding the
//     consumer lock, so an idle worker never blocks a busy one.
//   * max_items > 1, wait == 0: the first message, plus whatever is already in
//     the ring right now, up to max_items.
//   * max_items > 1, wait > 0: after the first message, keep taking messages
//     until max_items or until `wait` has elapsed since the first one arrived.
//     The gathering worker holds the consumer lock for that window, so the
//     other workers of the servlet do not nibble at its batch (they queue on
//     the lock and form the next batches).
// Whichever worker is free takes the next message: that is mpservice's
// shared-queue semantics, so a slow item never holds back items behind it
// while another worker idles.
//
// Invariants: gather() returns 0 only when the ring is closed and drained, or
// when idle_deadline passed with nothing taken; it never returns a partial
// multi-frame message.
//
// Memory ordering: none of its own; it composes Ring::wait_data and
// Ring::consume_locked, whose acquire/release pairs cover the payload bytes.
#pragma once

#include <cstdint>

#include "futex.hpp"
#include "ring.hpp"

namespace mps {

struct BatchPolicy {
  size_t max_items = 1;  // batch_size (0 and 1 both mean "one at a time")
  int64_t wait_ns = 0;   // batch_wait_time, counted from the first item
  int spin = 2000;       // busy-wait iterations before sleeping for the first item
  int yields = 0;        // then sched_yield rounds before sleeping (see Ring::wait_data)
};

inline size_t gather(Ring& ring, MessageSink& sink, const BatchPolicy& policy, int64_t idle_deadline_ns) {
  if (policy.max_items <= 1) {
    for (;;) {
      if (!ring.wait_data(idle_deadline_ns, policy.spin, policy.yields)) return 0;
      ShmLockGuard g(ring.consumer_lock(), idle_deadline_ns);
      if (!g.owns()) return 0;
      size_t n = ring.consume_locked(1, sink);
      if (n) return n;
      // Another worker took it first; go back to waiting.
    }
  }
  ShmLockGuard g(ring.consumer_lock(), idle_deadline_ns);
  if (!g.owns()) return 0;
  if (!ring.wait_data(idle_deadline_ns, policy.spin, policy.yields)) return 0;
  size_t n = ring.consume_locked(policy.max_items, sink);
  if (n == 0 || policy.wait_ns <= 0) return n;
  const int64_t deadline = now_ns() + policy.wait_ns;
  while (n < policy.max_items) {
    if (!ring.wait_data(deadline, 0)) break;
    n += ring.consume_locked(policy.max_items - n, sink);
  }
  return n;
}

}  // namespace mps
