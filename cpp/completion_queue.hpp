// completion_queue.hpp — hands finished async requests from the collector
// thread to the asyncio event loop, and wakes the loop through an eventfd.
//
// The collector (single producer) publishes the tokens of the async requests
// it finished in one drained batch, then writes the eventfd once.  The loop
// (single consumer) has the eventfd registered as a reader; its callback
// drains every token at once.  So a burst of completions costs one eventfd
// write and one loop wake-up, not one call_soon_threadsafe per item.
//
// Invariants
//   * Exactly one producer thread and one consumer thread.
//   * A token published is drained exactly once (from the lock-free ring or,
//     if the ring was full, from the overflow list).
//   * The consumer reads (clears) the eventfd BEFORE popping; the producer
//     writes it AFTER pushing.  A token pushed after the consumer's pops is
//     followed by a write the consumer has not yet read, so the loop wakes
//     again: no completion is ever left unseen.
//
// Memory ordering: boost::lockfree::spsc_queue publishes each element with
// release/acquire on its indices.  The overflow list (used only if the ring
// is full: the loop fell far behind) is guarded by a mutex, and its
// non-emptiness is flagged with a release store read with acquire.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <boost/lockfree/spsc_queue.hpp>
#include <cerrno>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <vector>

namespace mps {

// Someone who hears, once per drained batch, which of its requests finished
// (the HTTP front).  completed() runs on the collector thread: it must be
// quick and must not block (hand the tokens over and return).
class CompletionListener {
 public:
  virtual ~CompletionListener() = default;
  virtual void completed(const std::vector<uint64_t>& tokens) = 0;
};

class CompletionQueue {
 public:
  explicit CompletionQueue(size_t capacity) : ring_(capacity) {
    fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd_ < 0) throw std::runtime_error("eventfd failed");
  }
  ~CompletionQueue() { ::close(fd_); }
  CompletionQueue(const CompletionQueue&) = delete;
  CompletionQueue& operator=(const CompletionQueue&) = delete;

  int fd() const { return fd_; }

  // Producer: make `tokens` visible, then wake the consumer once.
  void publish(const std::vector<uint64_t>& tokens) {
    if (tokens.empty()) return;
    size_t pushed = ring_.push(tokens.data(), tokens.size());
    if (pushed < tokens.size()) {
      std::lock_guard<std::mutex> g(mu_);
      overflow_.insert(overflow_.end(), tokens.begin() + long(pushed), tokens.end());
      has_overflow_.store(true, std::memory_order_release);
    }
    uint64_t one = 1;
    while (::write(fd_, &one, sizeof one) < 0 && errno == EINTR) {
    }
  }

  // Consumer: clear the eventfd, then take every published token.
  void drain(std::vector<uint64_t>& out) {
    uint64_t count;
    while (::read(fd_, &count, sizeof count) < 0 && errno == EINTR) {
    }
    ring_.consume_all([&](uint64_t t) { out.push_back(t); });
    if (has_overflow_.load(std::memory_order_acquire)) {
      std::lock_guard<std::mutex> g(mu_);
      out.insert(out.end(), overflow_.begin(), overflow_.end());
      overflow_.clear();
      has_overflow_.store(false, std::memory_order_relaxed);
    }
  }

 private:
  boost::lockfree::spsc_queue<uint64_t> ring_;
  int fd_ = -1;
  std::mutex mu_;
  std::vector<uint64_t> overflow_;
  std::atomic<bool> has_overflow_{false};
};

}  // namespace mps
