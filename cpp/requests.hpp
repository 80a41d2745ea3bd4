// requests.hpp — the request book of one Server: admission (the ledger's
// capacity bound), sending a request into the servlet graph, results (the
// collector thread that drains the output ring into the ledger), and the
// completion queue that tells an event loop which async requests finished.
//
// The bindings compose these steps into Server.call, Server.stream and the
// asyncio paths; every decision — whether a request is admitted, what a
// failed push means for its slot, when a result is dropped — is made here.
//
// A request's life: admit() takes a slot (or says why not); send() pushes
// the message under the slot's token (a non-blocking send that found the
// ring full keeps the slot so the caller can retry with blocking allowed;
// any other failed send gives the slot back); the collector files the
// result; take() hands it to the caller and frees the slot, or abandon()
// makes the collector drop it on arrival (the slot stays counted in
// backlog() until then, as in mpservice).
//
// Invariants
//   * Every admitted slot ends in exactly one of: take(), withdraw() (never
//     sent), abandon() (dropped on arrival or at once if already done),
//     fail_pending() (teardown).
//   * The collector runs from start() until the output ring is closed and
//     drained; stop() and the destructor close the ring and join it.
//   * Members are declared so that the collector (which writes into the
//     ledger, the completion queue and the payload home) is destroyed first.
//
// Threading and memory ordering: callers may use a RequestBook from any
// number of threads; the ledger and the completion queue state their own
// orderings (ledger.hpp, completion_queue.hpp).  Counters are relaxed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "collector.hpp"
#include "completion_queue.hpp"
#include "ledger.hpp"
#include "payload_home.hpp"
#include "ring.hpp"
#include "wire.hpp"

namespace mps {

class RequestBook {
 public:
  // `home` (may be null) receives large results (payload_home.hpp);
  // `dispose` releases what a dropped result refers to.  Both must outlive
  // the book.
  RequestBook(Ring& output, uint32_t capacity, PayloadHome* home, Ledger::Disposer dispose);
  ~RequestBook();
  RequestBook(const RequestBook&) = delete;
  RequestBook& operator=(const RequestBook&) = delete;

  // The result every request in flight gets if the output ring turns out
  // corrupt.  Before start().
  void set_failure(uint32_t flags, std::string payload) { collector_.set_failure(flags, std::move(payload)); }
  // Who hears of finished Notify::front requests (the HTTP front; null:
  // nobody).  At any time; after it returns the previous one is not called.
  void set_front(CompletionListener* l) { collector_.set_front(l); }
  // Starts the collector; it spins `spin` rounds and yields `yields` times
  // before it sleeps on an empty ring.
  void start(int spin, int yields);
  // Closes the output ring and waits until the collector drained it.
  void stop();

  // ---- one request
  // Takes a slot: ok, backlog_full (none free, !wait), backlog_timeout or
  // closed.  `notify`: where the completion is reported (the completion
  // queue, or the HTTP front's listener).
  Status admit(bool wait, int64_t deadline_ns, uint32_t* idx, Ledger::Notify notify = Ledger::Notify::none) {
    return ledger_.acquire(wait, deadline_ns, idx, notify);
  }
  // Pushes `m` (its id is set to the slot's token) into `entry`.  Returns
  // ok; push_timeout when !may_block and there is no room now (the slot is
  // kept: retry with may_block); otherwise, on push_timeout (the deadline
  // passed) or closed, the slot is withdrawn.
  Status send(Ring& entry, uint32_t idx, OutMessage m, int64_t deadline_ns, bool may_block);
  // Frees a slot whose request was never sent.
  void withdraw(uint32_t idx) { ledger_.withdraw(idx); }
  // Waits for the result (spinning `spin` rounds first) until the deadline.
  bool wait(uint32_t idx, int64_t deadline_ns, int spin = 0) { return ledger_.wait(idx, deadline_ns, spin); }
  // Hands the result of a done slot to consume(Ledger::Result&) and frees the slot.
  template <class Consume>
  decltype(auto) take(uint32_t idx, Consume&& consume) {
    return ledger_.take(idx, std::forward<Consume>(consume));
  }
  // The caller gives up: the result is dropped on arrival (or now, if it is
  // already there).
  void abandon(uint32_t idx, Ledger::GiveUp why) { ledger_.give_up(idx, why); }
  // The slot an async token names; throws std::invalid_argument if stale.
  uint32_t slot_of(uint64_t token) const { return ledger_.slot_of(token); }
  uint64_t token(uint32_t idx) const { return ledger_.token(idx); }

  // ---- async requests: tokens finished since the last drain (clears the eventfd)
  void drain_async(std::vector<uint64_t>& out) { completions_.drain(out); }
  int async_fd() const { return completions_.fd(); }

  // ---- lifecycle
  // No new requests; wakes callers waiting for a slot.
  void close() { ledger_.close(); }
  // Completes every request in flight with this result (teardown).
  void fail_pending(uint32_t flags, const std::string& payload);

  // ---- introspection
  Ledger& ledger() { return ledger_; }
  uint32_t backlog() const { return ledger_.backlog(); }
  uint32_t capacity() const { return ledger_.capacity(); }
  bool collector_running() const { return collector_.running(); }
  uint64_t delivered() const { return collector_.delivered(); }
  std::vector<Ledger::SlotSnapshot> snapshot() const { return ledger_.snapshot(); }

 private:
  Ring& output_;
  Ledger ledger_;
  CompletionQueue completions_;
  Collector collector_;  // last: destroyed (joined) before what it writes into
};

}  // namespace mps
