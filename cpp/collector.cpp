#include "collector.hpp"

#include <cstring>

#include "quiet_thread.hpp"

namespace mps {

void Collector::Sink::begin(uint64_t id, uint32_t flags, uint64_t aux, uint64_t total) {
  slot_ = c_.ledger_.lookup(id);
  id_ = id;
  if (!slot_) return;
  slot_->flags = flags;
  slot_->aux = aux;
  slot_->payload.clear();
  home_ = nullptr;
  filled_ = 0;
  if (c_.home_ && total >= kLargePayloadBytes)
    home_ = c_.home_->acquire(flags, total, &slot_->flags, &slot_->payload);
  if (!home_) slot_->payload.reserve(total);
}

void Collector::Sink::append(const char* data, size_t len) {
  if (!slot_) return;
  if (home_) {
    std::memcpy(home_ + filled_, data, len);
    filled_ += len;
  } else {
    slot_->payload.append(data, len);
  }
}

void Collector::Sink::end() {
  if (slot_) {
    const bool notify = slot_->notify_async;  // read before finishing: the slot may be freed
    if (c_.ledger_.finish_quietly(*slot_)) to_wake.push_back(slot_);
    if (notify) async_done.push_back(id_);
    c_.delivered_.fetch_add(1, std::memory_order_relaxed);
  } else {
    c_.dropped_.fetch_add(1, std::memory_order_relaxed);
  }
  slot_ = nullptr;
  home_ = nullptr;
}

void Collector::Sink::abort() {
  if (slot_ && home_) {
    c_.home_->abandon(slot_->flags, slot_->payload);
    slot_->flags = 0;  // the slot stays pending; it names nothing now
    slot_->payload.clear();
  }
  slot_ = nullptr;
  home_ = nullptr;
  c_.dropped_.fetch_add(1, std::memory_order_relaxed);
}

void Collector::start() {
  running_.store(true, std::memory_order_release);
  thread_ = start_quiet_thread([this] { run(); });
}

void Collector::run() {
  Sink sink(*this);
  for (;;) {
    if (!ring_.wait_data(kForever, spin_, yields_)) {
      if (ring_.finished()) break;
      continue;
    }
    size_t n;
    try {
      n = ring_.try_consume(SIZE_MAX, sink);
    } catch (const std::exception&) {
      // A corrupt frame (RingCorrupt) or an impossible allocation: nothing
      // more can be trusted from this ring.  Fail every request in flight
      // (instead of letting callers wait for their timeouts) and stop.
      corrupt_.store(true, std::memory_order_release);
      ring_.abort();
      for (Ledger::Slot* s : sink.to_wake) ledger_.wake(*s);
      sink.to_wake.clear();
      std::vector<uint64_t> tokens = ledger_.fail_pending(failure_flags_, failure_payload_);
      if (completions_) completions_->publish(tokens);
      break;
    }
    for (Ledger::Slot* s : sink.to_wake) ledger_.wake(*s);
    sink.to_wake.clear();
    if (!sink.async_done.empty()) {
      if (completions_) completions_->publish(sink.async_done);
      sink.async_done.clear();
    }
    if (n && on_batch_) on_batch_(n);
  }
  running_.store(false, std::memory_order_release);
}

void Collector::join() {
  if (thread_.joinable()) thread_.join();
}

}  // namespace mps
