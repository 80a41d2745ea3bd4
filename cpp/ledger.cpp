#include "ledger.hpp"

#include <chrono>

namespace mps {

Ledger::Ledger(uint32_t capacity) : capacity_(capacity), slots_(new Slot[capacity]) {
  free_.reserve(capacity);
  for (uint32_t i = capacity; i > 0; --i) free_.push_back(i - 1);
}

Status Ledger::acquire(bool wait, int64_t deadline_ns, uint32_t* idx, Notify notify, int64_t now) {
  std::unique_lock<std::mutex> lk(mu_);
  while (free_.empty()) {
    if (closed_.load(std::memory_order_relaxed)) return Status::closed;
    if (!wait) return Status::backlog_full;
    const int64_t left = deadline_ns == kForever ? INT64_MAX / 2 : deadline_ns - now_ns();
    if (left <= 0) return Status::backlog_timeout;
    ++acquire_waiters_;
    cv_.wait_for(lk, std::chrono::nanoseconds(left));
    --acquire_waiters_;
  }
  if (closed_.load(std::memory_order_relaxed)) return Status::closed;
  uint32_t i = free_.back();
  free_.pop_back();
  in_use_.fetch_add(1, std::memory_order_relaxed);
  lk.unlock();
  count(kServerAdmitted);
  Slot& s = slots_[i];
  // The low 31 bits count; the top bit marks a slot of the HTTP front (ledger.hpp).
  s.gen = ((s.gen + 1) & 0x7fffffffu) | (notify == Notify::front ? 0x80000000u : 0u);
  s.result.flags = 0;
  s.result.aux = 0;
  s.result.payload.clear();
  s.t_start_ns = now != 0 ? now : now_ns();
  s.notify = notify;
  s.state.store(kPending, std::memory_order_release);
  *idx = i;
  return Status::ok;
}

uint32_t Ledger::slot_of(uint64_t token) const {
  const uint32_t idx = uint32_t(token & 0xffffffffu);
  if (idx >= capacity_) throw std::invalid_argument("bad request token");
  if (this->token(idx) != token) throw std::invalid_argument("stale request token");
  return idx;
}

Ledger::Result* Ledger::open(uint64_t token, uint32_t* idx) {
  const uint32_t i = uint32_t(token & 0xffffffffu);
  if (i >= capacity_) return nullptr;
  Slot& s = slots_[i];
  uint32_t st = s.state.load(std::memory_order_acquire);
  if ((st != kPending && st != kAbandoned) || s.gen != uint32_t(token >> 32)) return nullptr;
  s.result.flags = 0;
  s.result.aux = 0;
  s.result.payload.clear();
  *idx = i;
  return &s.result;
}

Ledger::Finished Ledger::finish_quietly(uint32_t idx, int64_t now) {
  Slot& s = slots_[idx];
  const Notify notify = s.notify;  // read first: an abandoned slot is freed below
  uint32_t expected = kPending;
  if (kMetering && meter_)
    observe_time(meter_->times, (now != 0 ? now : now_ns()) - s.t_start_ns);  // the collector's line
  if (s.state.compare_exchange_strong(expected, kDone, std::memory_order_seq_cst)) {
    collected(kServerFiled);
    return {s.sleeping.load(std::memory_order_seq_cst) != 0, notify, true};
  }
  collected(kServerLate);
  if (expected == kAbandoned) {
    if (disposer_) disposer_(s.result.flags, s.result.payload);
    free_slot(idx, true);
  }
  return {false, notify, false};
}

bool Ledger::wait(uint32_t idx, int64_t deadline_ns, int spin) {
  Slot& s = slots_[idx];
  for (int i = 0; i < spin; ++i) {
    if (s.state.load(std::memory_order_acquire) == kDone) return true;
    cpu_relax();
  }
  for (;;) {
    s.sleeping.store(1, std::memory_order_seq_cst);
    uint32_t st = s.state.load(std::memory_order_seq_cst);
    if (st == kDone) {
      s.sleeping.store(0, std::memory_order_relaxed);
      return true;
    }
    bool ok = futex_wait_until(&s.state, st, deadline_ns, false);
    s.sleeping.store(0, std::memory_order_relaxed);
    if (s.state.load(std::memory_order_acquire) == kDone) return true;
    if (!ok) return false;
  }
}

void Ledger::free_slot(uint32_t idx, bool by_collector) {
  Slot& s = slots_[idx];
  s.result.payload.clear();
  // Keep the buffer for the next result, but do not hoard big ones.
  if (s.result.payload.capacity() > (1u << 20)) s.result.payload.shrink_to_fit();
  s.notify = Notify::none;
  s.state.store(kFree, std::memory_order_release);
  std::lock_guard<std::mutex> lk(mu_);
  free_.push_back(idx);
  in_use_.fetch_sub(1, std::memory_order_relaxed);
  if (acquire_waiters_) cv_.notify_one();
  if (by_collector)
    collected(kServerFreedLate);
  else
    count(kServerFreed);
}

bool Ledger::abandon(uint32_t idx, GiveUp why) {
  // The token first: once abandoned, the slot may be freed and reused at any moment.
  const uint64_t tok = token(idx);
  uint32_t expected = kPending;
  if (!slots_[idx].state.compare_exchange_strong(expected, kAbandoned, std::memory_order_seq_cst))
    return false;
  count(why == GiveUp::timed_out ? kServerTimedOut : kServerCancelled);
  if (board_) board_->mark(tok);
  return true;
}

void Ledger::give_up(uint32_t idx, GiveUp why) {
  if (abandon(idx, why)) return;
  count(why == GiveUp::timed_out ? kServerTimedOut
                                 : kServerCancelled);  // done just now: the caller still gave up
  discard(idx);
}

void Ledger::discard(uint32_t idx) {
  Slot& s = slots_[idx];
  if (disposer_) disposer_(s.result.flags, s.result.payload);
  free_slot(idx);
}

void Ledger::set_meter(MeterRecord* m) {
  meter_ = m;
  if (m) set(m->own[kServerCapacity], capacity_);
}

void Ledger::close() {
  closed_.store(true, std::memory_order_release);
  std::lock_guard<std::mutex> lk(mu_);
  cv_.notify_all();
}

std::vector<uint64_t> Ledger::fail_pending(uint32_t flags, const std::string& payload,
                                           std::vector<uint64_t>* front) {
  std::vector<uint64_t> async_tokens;
  for (uint32_t i = 0; i < capacity_; ++i) {
    Slot& s = slots_[i];
    uint32_t st = s.state.load(std::memory_order_acquire);
    if (st == kPending || st == kAbandoned) {
      const uint64_t tok = token(i);
      s.result.flags = flags;
      s.result.aux = 0;
      s.result.payload = payload;
      Finished f = finish_quietly(i);
      if (f.notify == Notify::async) async_tokens.push_back(tok);
      if (f.notify == Notify::front && front) front->push_back(tok);
      if (f.wake) wake(i);
    }
  }
  return async_tokens;
}

std::vector<Ledger::SlotSnapshot> Ledger::snapshot() const {
  std::vector<SlotSnapshot> out;
  const int64_t now = now_ns();
  for (uint32_t i = 0; i < capacity_; ++i) {
    uint32_t st = slots_[i].state.load(std::memory_order_acquire);
    if (st != kFree) out.push_back({i, st, now - slots_[i].t_start_ns});
  }
  return out;
}

}  // namespace mps
