#include "collector.hpp"

#include <cstring>

#include "quiet_thread.hpp"
#include "spin_governor.hpp"

namespace mps {

void Collector::Sink::begin(uint64_t id, uint32_t flags, uint64_t aux, uint64_t total) {
  id_ = id;
  chunk_ = (flags & kFlagChunk) != 0;
  if (chunk_) {  // filed at end(), item by item
    result_ = nullptr;
    chunk_buf_.clear();
    chunk_buf_.reserve(total);
    return;
  }
  result_ = c_.ledger_.open(id, &idx_);
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
  if (chunk_) {
    chunk_buf_.append(data, len);
    return;
  }
  if (!result_) return;
  if (home_) {
    std::memcpy(home_ + filled_, data, len);
    filled_ += len;
  } else {
    result_->payload.append(data, len);
  }
}

void Collector::Sink::file(Ledger::Finished f, uint32_t idx, uint64_t token) {
  if (f.wake) to_wake.push_back(idx);
  if (f.notify == Ledger::Notify::async) async_done.push_back(token);
  if (f.notify == Ledger::Notify::front) front_done.push_back(token);
  c_.delivered_.fetch_add(1, std::memory_order_relaxed);
}

void Collector::Sink::file_chunk() {
  // A malformed chunk throws: the ring is then treated as corrupt (run()).
  const ChunkView v = parse_chunk(chunk_buf_.data(), chunk_buf_.size());
  bool blob_given = false;
  const int64_t now = now_ns();  // one clock reading for the chunk's service times
  for (uint32_t i = 0; i < v.count; ++i) {
    const uint64_t token = v.token(i);
    uint32_t idx;
    Ledger::Result* r = c_.ledger_.open(token, &idx);
    if (!r) {
      c_.dropped_.fetch_add(1, std::memory_order_relaxed);
      c_.ledger_.note_stale();
      continue;
    }
    r->flags = kFlagChunk | (v.status[i] ? kFlagError : 0);
    const ChunkPartHeader ph{v.token(0), i, blob_given ? 0u : 1u};
    r->payload.assign(reinterpret_cast<const char*>(&ph), sizeof ph);
    if (!blob_given) r->payload.append(v.blob, v.blob_len);
    Ledger::Finished f = c_.ledger_.finish_quietly(idx, now);
    file(f, idx, token);
    // An item whose caller gave up dropped its part: the next live one takes the blob.
    if (f.delivered) blob_given = true;
  }
}

void Collector::Sink::end() {
  if (chunk_) {
    chunk_ = false;
    file_chunk();
    chunk_buf_.clear();
    return;
  }
  if (result_) {
    file(c_.ledger_.finish_quietly(idx_), idx_, id_);
  } else {
    c_.dropped_.fetch_add(1, std::memory_order_relaxed);
    c_.ledger_.note_stale();
  }
  result_ = nullptr;
  home_ = nullptr;
}

void Collector::Sink::abort() {
  if (chunk_) {
    chunk_ = false;
    chunk_buf_.clear();
  }
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
  SpinGovernor governor(spin_, yields_);
  for (;;) {
    const int64_t t0 = now_ns();
    const bool got = ring_.wait_data(kForever, governor.spin(), governor.yields());
    governor.waited(now_ns() - t0);
    if (!got) {
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
