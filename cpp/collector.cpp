#include "collector.hpp"

#include <cstring>

#include "quiet_thread.hpp"

namespace mps {

void Collector::Sink::begin(uint64_t id, uint32_t flags, uint64_t aux, uint64_t total) {
  result_ = c_.ledger_.open(id, &idx_);
  id_ = id;
  if (!result_) return;
  result_->flags = flags;
  result_->aux = aux;
  home_ = nullptr;
  filled_ = 0;
  if (c_.home_ && total >= kLargePayloadBytes && !c_.ledger_.for_front(idx_))
    home_ = c_.home_->acquire(flags, total, &result_->flags, &result_->payload);
  if (!home_) result_->payload.reserve(total);
}

void Collector::Sink::append(const char* data, size_t len) {
  if (!result_) return;
  if (home_) {
    std::memcpy(home_ + filled_, data, len);
    filled_ += len;
  } else {
    result_->payload.append(data, len);
  }
}

void Collector::Sink::end() {
  if (result_) {
    Ledger::Finished f = c_.ledger_.finish_quietly(idx_);
    if (f.wake) to_wake.push_back(idx_);
    if (f.notify == Ledger::Notify::async) async_done.push_back(id_);
    if (f.notify == Ledger::Notify::front) front_done.push_back(id_);
    c_.delivered_.fetch_add(1, std::memory_order_relaxed);
  } else {
    c_.dropped_.fetch_add(1, std::memory_order_relaxed);
    c_.ledger_.note_stale();
  }
  result_ = nullptr;
  home_ = nullptr;
}

void Collector::Sink::abort() {
  if (result_ && home_) {
    c_.home_->abandon(result_->flags, result_->payload);
    result_->flags = 0;  // the slot stays pending; it names nothing now
    result_->payload.clear();
  }
  result_ = nullptr;
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
    try {
      ring_.try_consume(SIZE_MAX, sink);
    } catch (const std::exception&) {
      // A corrupt frame (RingCorrupt) or an impossible allocation: nothing
      // more can be trusted from this ring.  Fail every request in flight
      // (instead of letting callers wait for their timeouts) and stop.
      corrupt_.store(true, std::memory_order_release);
      ring_.abort();
      for (uint32_t idx : sink.to_wake) ledger_.wake(idx);
      sink.to_wake.clear();
      std::vector<uint64_t> front_tokens;
      std::vector<uint64_t> tokens = ledger_.fail_pending(failure_flags_, failure_payload_, &front_tokens);
      if (completions_) completions_->publish(tokens);
      tell_front(front_tokens);
      break;
    }
    for (uint32_t idx : sink.to_wake) ledger_.wake(idx);
    sink.to_wake.clear();
    if (!sink.async_done.empty()) {
      if (completions_) completions_->publish(sink.async_done);
      sink.async_done.clear();
    }
    if (!sink.front_done.empty()) {
      tell_front(sink.front_done);
      sink.front_done.clear();
    }
  }
  running_.store(false, std::memory_order_release);
}

void Collector::join() {
  if (thread_.joinable()) thread_.join();
}

}  // namespace mps
