#include "ensemble_router.hpp"

#include <cstring>

#include "quiet_thread.hpp"

namespace mps {

EnsembleRouter::EnsembleRouter(Ring& input, std::vector<Ring*> members, Ring& join, Ring& output,
                               bool fail_fast)
    : input_(input), members_(std::move(members)), join_(join), output_(output), fail_fast_(fail_fast) {
  if (members_.empty() || members_.size() > kMaxEnsembleMembers)
    throw std::invalid_argument("an ensemble needs 1..255 members");
}

EnsembleRouter::~EnsembleRouter() {
  // The owner stops the rings first; if it did not, make sure the threads end.
  if (fanout_.joinable()) {
    input_.abort();
    fanout_.join();
  }
  if (fanin_.joinable()) {
    join_.abort();
    fanin_.join();
  }
}

void EnsembleRouter::start() {
  fanout_ = start_quiet_thread([this] { fan_out(); });
  fanin_ = start_quiet_thread([this] { fan_in(); });
}

void EnsembleRouter::join_fanout() {
  if (fanout_.joinable()) fanout_.join();
}

void EnsembleRouter::join_fanin() {
  if (fanin_.joinable()) fanin_.join();
}

size_t EnsembleRouter::open_entries() const {
  std::lock_guard<std::mutex> g(mu_);
  return table_.size() - free_.size();
}

void EnsembleRouter::push_all(Ring& ring, std::vector<OwnedMessage>& msgs) {
  if (msgs.empty()) return;
  std::vector<Slice> slices(msgs.size());
  std::vector<OutMessage> out(msgs.size());
  for (size_t i = 0; i < msgs.size(); ++i) {
    slices[i] = Slice{msgs[i].payload.data(), msgs[i].payload.size()};
    out[i] = OutMessage{msgs[i].id, msgs[i].flags, msgs[i].aux, &slices[i], 1};
  }
  size_t written = 0;
  if (ring.push(out.data(), out.size(), kForever, &written) != PushStatus::ok) {
    dropped_.fetch_add(msgs.size() - written, std::memory_order_relaxed);  // ring closed: stopping
    for (size_t i = written; i < msgs.size(); ++i) dispose(msgs[i], 1);
  }
}

uint64_t EnsembleRouter::open_entry(const OwnedMessage& m) {
  std::lock_guard<std::mutex> g(mu_);
  uint32_t idx;
  if (!free_.empty()) {
    idx = free_.back();
    free_.pop_back();
  } else {
    idx = uint32_t(table_.size());
    table_.emplace_back();
  }
  Gathering& e = table_[idx];
  e.id = m.id;
  e.aux = m.aux;
  e.finished = e.failed = 0;
  e.open = true;
  e.part_flags.assign(members_.size(), kPartMissing);
  e.parts.assign(members_.size(), std::string());
  return ticket(e.gen, idx, 0);
}

void EnsembleRouter::fan_out() {
  std::vector<OwnedMessage> errors;
  std::vector<uint64_t> tickets;
  std::vector<Slice> slices;
  std::vector<OutMessage> out;
  for_each_batch(input_, 64, [&](std::vector<OwnedMessage>& msgs) {
    errors.clear();
    tickets.clear();
    slices.clear();
    for (auto& m : msgs) {
      if (m.flags & kFlagError) {
        // Forwarded once, but it came with one reference per member.
        dispose(m, int(members_.size()) - 1);
        errors.push_back(std::move(m));
        continue;
      }
      tickets.push_back(open_entry(m));
      slices.push_back(Slice{m.payload.data(), m.payload.size()});
    }
    if (meter_) bump(meter_->own[kRouterRouted], tickets.size());
    push_all(output_, errors);
    // Same payload bytes to every member; one push (one wake-up) per member per batch.
    for (size_t member = 0; member < members_.size() && !tickets.empty(); ++member) {
      out.clear();
      size_t k = 0;
      for (auto& m : msgs) {
        if (m.flags & kFlagError) continue;
        out.push_back(OutMessage{tickets[k] | member, m.flags, 0, &slices[k], 1});
        ++k;
      }
      size_t written = 0;
      if (members_[member]->push(out.data(), out.size(), kForever, &written) != PushStatus::ok) {
        dropped_.fetch_add(out.size() - written, std::memory_order_relaxed);
        size_t skip = written;
        for (auto& m : msgs) {
          if (m.flags & kFlagError) continue;
          if (skip > 0) {
            --skip;
            continue;
          }
          dispose(m, 1);  // this member's reference
        }
      }
    }
  });
}

void EnsembleRouter::file_result(OwnedMessage& m, std::vector<OwnedMessage>& out,
                                 std::vector<OwnedMessage>& dropped) {
  const uint32_t member = uint32_t(m.id & 0xff);
  const uint32_t idx = uint32_t(m.id >> 8);
  const uint32_t gen = uint32_t(m.id >> 40);
  std::lock_guard<std::mutex> g(mu_);
  if (idx >= table_.size() || member >= members_.size()) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    dropped.push_back(std::move(m));
    return;
  }
  Gathering& e = table_[idx];
  if (!e.open || (e.gen & 0xffffffu) != gen || e.part_flags[member] != kPartMissing) {
    dropped_.fetch_add(1, std::memory_order_relaxed);  // emitted already (fail_fast) or stale
    if (meter_) bump(meter_->own[kRouterLate]);
    dropped.push_back(std::move(m));
    return;
  }
  const bool is_error = (m.flags & kFlagError) != 0;
  e.part_flags[member] = m.flags;
  e.parts[member] = std::move(m.payload);
  e.finished += 1;
  e.failed += is_error;
  const uint32_t n = uint32_t(members_.size());
  if (!(e.finished == n || (fail_fast_ && is_error))) return;
  const bool failed = e.failed > 0 && (fail_fast_ || e.failed == n);
  out.push_back(OwnedMessage{e.id, kFlagEnsemble | (failed ? kFlagError : 0u), e.aux,
                             compose(e.part_flags, e.parts, e.finished)});
  e.open = false;
  e.gen += 1;
  e.parts.clear();
  free_.push_back(idx);
  emitted_.fetch_add(1, std::memory_order_relaxed);
  if (meter_) bump(meter_->own[kRouterJoined]);
}

void EnsembleRouter::fan_in() {
  std::vector<OwnedMessage> out, dropped;
  for_each_batch(join_, 256, [&](std::vector<OwnedMessage>& msgs) {
    out.clear();
    dropped.clear();
    for (auto& m : msgs) file_result(m, out, dropped);
    for (auto& m : dropped) dispose(m, 1);  // outside the table lock
    push_all(output_, out);
  });
}

}  // namespace mps
