// collector.hpp — the main process's thread that drains a server's output ring.
//
// Every result of the servlet graph lands in one output ring.  The collector
// is its only consumer: it copies each result into the ledger slot its token
// names and wakes the caller waiting there.  A dedicated thread (instead of
// callers taking turns) means results always drain, even while every caller
// thread is blocked pushing a large input, so the pipeline cannot deadlock on
// a full output ring.  The thread is C++ only: it never touches Python.
//
// Invariants
//   * The thread runs from start() until the ring is closed and empty.
//   * Results of one drained batch are all published before any caller is
//     woken (one wake-up per sleeping caller per batch).
//   * Messages for unknown/stale tokens are dropped (counted in dropped()).
//   * A corrupt ring never crashes the process: the collector aborts the
//     ring, fails every request in flight with the preset failure result and
//     stops (corrupt() tells).
//   * Tokens of finished slots flagged notify_async (done or abandoned) are
//     published on the CompletionQueue once per batch, after the slots were
//     finished, so the event loop sees each result already in its slot.
//
//   * Tokens of finished Notify::front slots go to the front's listener in
//     the same way, once per batch.
//   * A chunk of results (kFlagChunk, chunk.hpp) is filed item by item: each
//     live token's slot gets its part, and exactly one of them — the first
//     whose result the ledger accepts — gets the chunk's blob.
//   * Before sleeping on an empty ring it yields (set_spin), unless its
//     recent waits were all longer than that would cover (spin_governor.hpp).
//   * A result of at least kLargePayloadBytes is offered to the PayloadHome, if
//     one is set (see payload_home.hpp) and the slot is not the front's (the
//     front writes from the slot, without Python); otherwise it is copied
//     into the slot.
//
// Memory ordering: the ring's acquire on head covers the payload the sink
// copies; Ledger::finish_quietly publishes the slot with a seq_cst CAS (see ledger.hpp).
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "chunk.hpp"
#include "completion_queue.hpp"
#include "ledger.hpp"
#include "payload_home.hpp"
#include "ring.hpp"

namespace mps {

class Collector {
 public:
  Collector(Ring& ring, Ledger& ledger) : ring_(ring), ledger_(ledger) {}
  ~Collector() { join(); }

  // Must be set before start().
  void set_completions(CompletionQueue* q) { completions_ = q; }
  // Who hears of finished Notify::front slots (null: nobody).  May be set at
  // any time; once set_front() returned, the previous listener is not called
  // any more.
  void set_front(CompletionListener* l) {
    std::lock_guard<std::mutex> g(front_mu_);
    front_ = l;
  }
  // Hands `tokens` to the front's listener, if there is one.
  void tell_front(const std::vector<uint64_t>& tokens) {
    if (tokens.empty()) return;
    std::lock_guard<std::mutex> g(front_mu_);
    if (front_) front_->completed(tokens);
  }
  // The result given to every request in flight if the ring turns out corrupt.
  // Must be set before start().
  void set_failure(uint32_t flags, std::string payload) {
    failure_flags_ = flags;
    failure_payload_ = std::move(payload);
  }
  bool corrupt() const { return corrupt_.load(std::memory_order_acquire); }
  // Where large results go (null: into the slot).  Must be set before start().
  void set_home(PayloadHome* home) { home_ = home; }
  // Busy-wait rounds before sleeping when the ring is empty.
  void set_spin(int spin, int yields = 0) {
    spin_ = spin;
    yields_ = yields;
  }
  void start();
  // Returns after the ring has been closed (by the owner) and drained.
  void join();

  uint64_t delivered() const { return delivered_.load(std::memory_order_relaxed); }
  uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }
  bool running() const { return running_.load(std::memory_order_acquire); }

 private:
  class Sink : public MessageSink {
   public:
    explicit Sink(Collector& c) : c_(c) {}
    void begin(uint64_t id, uint32_t flags, uint64_t aux, uint64_t total) override;
    void append(const char* data, size_t len) override;
    void end() override;
    void abort() override;

   private:
    void file(Ledger::Finished f, uint32_t idx, uint64_t token);
    void file_chunk();

    Collector& c_;
    bool chunk_ = false;  // the current message is a chunk of results (buffered in chunk_buf_)
    std::string chunk_buf_;
    Ledger::Result* result_ = nullptr;  // the current message's slot, if it expects one
    uint32_t idx_ = 0;
    uint64_t id_ = 0;
    char* home_ = nullptr;  // the current message's PayloadHome memory, if any
    uint64_t filled_ = 0;

   public:
    std::vector<uint32_t> to_wake;     // slots whose owners to wake after the batch
    std::vector<uint64_t> async_done;  // tokens for the CompletionQueue
    std::vector<uint64_t> front_done;  // tokens for the front's listener
  };

  void run();

  Ring& ring_;
  Ledger& ledger_;
  std::thread thread_;
  CompletionQueue* completions_ = nullptr;
  std::mutex front_mu_;  // held while the listener is called: see set_front()
  CompletionListener* front_ = nullptr;
  PayloadHome* home_ = nullptr;
  uint32_t failure_flags_ = 0;
  std::string failure_payload_;
  std::atomic<bool> corrupt_{false};
  std::atomic<uint64_t> delivered_{0};
  std::atomic<uint64_t> dropped_{0};
  std::atomic<bool> running_{false};
  int spin_ = 0;
  int yields_ = 0;
};

}  // namespace mps
