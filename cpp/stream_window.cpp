#include "stream_window.hpp"

#include <chrono>
#include <climits>

#include "chunk.hpp"

namespace mps {

size_t StreamWindow::submit(OutMessage* msgs, size_t n, bool wait, int64_t deadline_ns, Status* st,
                            bool may_block) {
  if (!may_block) wait = false;
  *st = Status::ok;
  scratch_.clear();
  int64_t t0 = 0;  // one clock reading for the run's start times, taken once the first slot is ours
  for (size_t i = 0; i < n; ++i) {
    uint32_t idx;
    Status a = ledger_.acquire(wait && i == 0, deadline_ns, &idx, Ledger::Notify::none, t0);
    if (i == 0 && a == Status::ok) t0 = now_ns();
    if (a != Status::ok) {
      *st = a;
      if (a == Status::backlog_timeout) ledger_.note_rejected();  // the stream waited its whole timeout
      break;
    }
    msgs[i].id = ledger_.token(idx);
    scratch_.push_back(idx);
  }
  size_t k = scratch_.size();
  if (k == 0) return 0;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (closed_) {
      for (uint32_t idx : scratch_) ledger_.withdraw(idx);
      *st = Status::closed;
      return 0;
    }
  }
  size_t written = 0;
  PushStatus ps =
      may_block ? entry_.push(msgs, k, deadline_ns, &written) : entry_.try_push(msgs, k, &written);
  for (size_t i = written; i < k; ++i) ledger_.withdraw(scratch_[i]);
  if (ps != PushStatus::ok) *st = ps == PushStatus::closed ? Status::closed : Status::push_timeout;
  const int64_t deadline = item_timeout_ns_ == kForever ? kForever : now_ns() + item_timeout_ns_;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!closed_) {
      for (size_t i = 0; i < written; ++i) entries_.push_back({scratch_[i], deadline});
    } else {
      // The consumer left while we were pushing: these results are unwanted.
      for (size_t i = 0; i < written; ++i) {
        ledger_.give_up(scratch_[i], Ledger::GiveUp::cancelled);
      }
      *st = Status::closed;
    }
  }
  cv_.notify_one();
  return written;
}

size_t StreamWindow::submit_chunk(uint32_t count, const Slice* blob, size_t nparts, int64_t deadline_ns,
                                  Status* st, bool may_block) {
  *st = Status::ok;
  if (count == 0 || count > kMaxChunkItems) {
    *st = Status::backlog_full;
    return 0;
  }
  scratch_.clear();
  std::vector<uint64_t> tokens;
  tokens.reserve(count);
  const int64_t t0 = now_ns();  // one reading for the chunk's start times
  for (uint32_t i = 0; i < count; ++i) {
    uint32_t idx;
    Status a = ledger_.acquire(false, deadline_ns, &idx, Ledger::Notify::none, t0);
    if (a != Status::ok) {
      for (uint32_t j : scratch_) ledger_.withdraw(j);
      *st = a;
      return 0;
    }
    scratch_.push_back(idx);
    tokens.push_back(ledger_.token(idx));
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (closed_) {
      for (uint32_t idx : scratch_) ledger_.withdraw(idx);
      *st = Status::closed;
      return 0;
    }
  }
  const std::string head = chunk_head(tokens.data(), nullptr, count);
  std::vector<Slice> parts;
  parts.reserve(nparts + 1);
  parts.push_back({head.data(), head.size()});
  for (size_t i = 0; i < nparts; ++i) parts.push_back(blob[i]);
  OutMessage m{tokens[0], kFlagChunk, 0, parts.data(), parts.size()};
  size_t written = 0;
  PushStatus ps = may_block ? entry_.push(&m, 1, deadline_ns, &written) : entry_.try_push(&m, 1, &written);
  if (written == 0) {
    for (uint32_t idx : scratch_) ledger_.withdraw(idx);
    *st = ps == PushStatus::closed ? Status::closed : Status::push_timeout;
    return 0;
  }
  const int64_t deadline = item_timeout_ns_ == kForever ? kForever : now_ns() + item_timeout_ns_;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!closed_) {
      for (uint32_t idx : scratch_) entries_.push_back({idx, deadline});
    } else {
      for (uint32_t idx : scratch_) ledger_.give_up(idx, Ledger::GiveUp::cancelled);
      *st = Status::closed;
    }
  }
  cv_.notify_one();
  return *st == Status::ok ? count : 0;
}

void StreamWindow::add_local() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    entries_.push_back({kNoSlot, kForever});
  }
  cv_.notify_one();
}

size_t StreamWindow::drain(size_t max, int spin, int64_t wake_by_ns, std::vector<Drained>& out) {
  InFlight head;
  {
    std::unique_lock<std::mutex> lk(mu_);
    auto ready = [&] { return !entries_.empty() || finished_ || closed_; };
    if (wake_by_ns == kForever) {
      cv_.wait(lk, ready);
    } else if (!cv_.wait_for(lk, std::chrono::nanoseconds(wake_by_ns - now_ns()), ready)) {
      out.push_back({Outcome::pending, 0});
      return 0;
    }
    if (entries_.empty()) {
      out.push_back({Outcome::end, 0});
      return 0;
    }
    head = entries_.front();
  }
  const int64_t until = head.deadline_ns < wake_by_ns ? head.deadline_ns : wake_by_ns;
  if (head.slot != kNoSlot && !ledger_.wait(head.slot, until, spin) && until < head.deadline_ns) {
    out.push_back({Outcome::pending, 0});
    return 0;
  }
  if (head.slot != kNoSlot && !ledger_.is_done(head.slot)) {
    // This item ran out of time: its result will be dropped when it comes.
    if (!ledger_.abandon(head.slot, Ledger::GiveUp::timed_out)) {
      // It completed at the last moment after all.
      out.push_back({Outcome::ready, head.slot});
    } else {
      out.push_back({Outcome::timed_out, 0});
    }
  } else {
    out.push_back({head.slot == kNoSlot ? Outcome::local : Outcome::ready, head.slot});
  }
  std::lock_guard<std::mutex> lk(mu_);
  entries_.pop_front();
  size_t n = 1;
  while (n < max && !entries_.empty()) {
    const InFlight& e = entries_.front();
    if (e.slot == kNoSlot) {
      out.push_back({Outcome::local, 0});
    } else if (ledger_.is_done(e.slot)) {
      out.push_back({Outcome::ready, e.slot});
    } else {
      break;
    }
    entries_.pop_front();
    ++n;
  }
  return n;
}

void StreamWindow::finish() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    finished_ = true;
  }
  cv_.notify_all();
}

void StreamWindow::close() {
  std::deque<InFlight> left;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (closed_) return;
    closed_ = true;
    left.swap(entries_);
  }
  cv_.notify_all();
  for (const InFlight& e : left) {
    if (e.slot == kNoSlot) continue;
    ledger_.give_up(e.slot, Ledger::GiveUp::cancelled);  // done: dropped now
  }
}

}  // namespace mps
