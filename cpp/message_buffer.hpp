// message_buffer.hpp — a MessageSink that keeps whole messages in memory.
//
// Routers (ensemble fan-out and fan-in) take a batch of messages off a ring,
// then decide where each goes; they need the payloads to outlive the ring's
// consumer lock.  This sink copies each message (all of its frames) into an
// OwnedMessage.
//
// Invariants: after a consume call returns, `msgs` holds only complete
// messages; a message cut short by an aborted ring is removed again.
// for_each_batch() returns once its ring is finished, or aborted because it
// turned out corrupt (an engine thread must not die of an exception).
// Memory ordering: none of its own (the ring's acquire on head covers the
// bytes copied in append()).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "futex.hpp"
#include "ring.hpp"

namespace mps {

struct OwnedMessage {
  uint64_t id = 0;
  uint32_t flags = 0;  // caller flags (framing bits stripped)
  uint64_t aux = 0;
  std::string payload;
};

class BufferSink : public MessageSink {
 public:
  std::vector<OwnedMessage> msgs;

  void begin(uint64_t id, uint32_t flags, uint64_t aux, uint64_t total) override {
    msgs.push_back(OwnedMessage{id, flags & ~kFramingMask, aux, {}});
    msgs.back().payload.reserve(total);
  }
  void append(const char* data, size_t len) override { msgs.back().payload.append(data, len); }
  void end() override {}
  void abort() override { msgs.pop_back(); }
};

// sched_yield rounds an idle router makes before it sleeps (see Ring::wait_data).
inline constexpr int kRouterYields = 100;

// Calls handle(msgs) for each batch of up to `max` messages taken off `ring`,
// sleeping while it is empty (after yielding its core up to kRouterYields
// times: cheaper than a futex sleep and the wake-up its producer would pay),
// until the ring is finished.
// A corrupt ring stops the loop (the ring is aborted: its items will fail by
// their timeouts) instead of killing the process.
template <class Handle>
void for_each_batch(Ring& ring, size_t max, Handle&& handle) {
  BufferSink sink;
  for (;;) {
    if (!ring.wait_data(kForever, 0, kRouterYields)) {
      if (ring.finished()) return;
      continue;
    }
    sink.msgs.clear();
    size_t n;
    try {
      n = ring.try_consume(max, sink);
    } catch (const std::exception&) {
      ring.abort();
      return;
    }
    if (n == 0) {
      if (ring.finished()) return;
      continue;
    }
    handle(sink.msgs);
  }
}

}  // namespace mps
