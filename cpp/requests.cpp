#include "requests.hpp"

namespace mps {

RequestBook::RequestBook(Ring& output, uint32_t capacity, PayloadHome* home, Ledger::Disposer dispose)
    : output_(output),
      ledger_(capacity),
      completions_(size_t(capacity) * 4 + 256),
      collector_(output, ledger_) {
  ledger_.set_disposer(std::move(dispose));
  collector_.set_completions(&completions_);
  collector_.set_home(home);
}

RequestBook::~RequestBook() { stop(); }

void RequestBook::start(int spin, int yields) {
  collector_.set_spin(spin, yields);
  collector_.start();
}

void RequestBook::stop() {
  output_.close();
  collector_.join();
}

Status RequestBook::send(Ring& entry, uint32_t idx, OutMessage m, int64_t deadline_ns, bool may_block) {
  m.id = ledger_.token(idx);
  PushStatus st = may_block ? entry.push(&m, 1, deadline_ns) : entry.try_push(&m, 1);
  if (st == PushStatus::ok) return Status::ok;
  if (st == PushStatus::timeout && !may_block) return Status::push_timeout;  // the caller retries
  ledger_.withdraw(idx);
  return st == PushStatus::closed ? Status::closed : Status::push_timeout;
}

void RequestBook::fail_pending(uint32_t flags, const std::string& payload) {
  std::vector<uint64_t> front;
  completions_.publish(ledger_.fail_pending(flags, payload, &front));
  collector_.tell_front(front);
}

}  // namespace mps
