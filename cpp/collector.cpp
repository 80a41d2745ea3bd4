#include "collector.hpp"

#include <csignal>
#include <pthread.h>

namespace mps {

void Collector::Sink::begin(uint64_t id, uint32_t flags, uint64_t aux, uint64_t total) {
  slot_ = c_.ledger_.lookup(id);
  if (!slot_) return;
  slot_->flags = flags;
  slot_->aux = aux;
  slot_->payload.clear();
  slot_->payload.reserve(total);
}

void Collector::Sink::append(const char* data, size_t len) {
  if (slot_) slot_->payload.append(data, len);
}

void Collector::Sink::end() {
  if (slot_) {
    if (c_.ledger_.finish_quietly(*slot_)) to_wake.push_back(slot_);
    c_.delivered_.fetch_add(1, std::memory_order_relaxed);
  } else {
    c_.dropped_.fetch_add(1, std::memory_order_relaxed);
  }
  slot_ = nullptr;
}

void Collector::Sink::abort() {
  slot_ = nullptr;
  c_.dropped_.fetch_add(1, std::memory_order_relaxed);
}

void Collector::start() {
  running_.store(true, std::memory_order_release);
  // Signals stay with the interpreter's threads: block them all here.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  thread_ = std::thread([this] { run(); });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

void Collector::run() {
  Sink sink(*this);
  for (;;) {
    if (!ring_.wait_data(kForever, spin_)) {
      if (ring_.finished()) break;
      continue;
    }
    size_t n = ring_.try_consume(SIZE_MAX, sink);
    for (Ledger::Slot* s : sink.to_wake) ledger_.wake(*s);
    sink.to_wake.clear();
    if (n && on_batch_) on_batch_(n);
  }
  running_.store(false, std::memory_order_release);
}

void Collector::join() {
  if (thread_.joinable()) thread_.join();
}

}  // namespace mps
