// ledger.hpp — the main process's book of requests in flight.
//
// A Server has `capacity` slots.  A request takes a free slot, its id travels
// with the payload through the servlet graph as a token (generation << 32 |
// slot index), and the collector writes the result into the slot.  The slot
// is freed when the caller takes the result, or, if the caller gave up
// (timeout, cancellation, early exit from a stream), when the result arrives.
// So backlog() counts an abandoned request until it leaves the pipeline, as
// mpservice does.  Only the ledger touches its slots: the collector writes a
// result through open()/finish_quietly(), callers read it through take().
//
// Invariants
//   * A slot is in exactly one of: free (on the free list), pending (owned by
//     a caller, result not yet written), done (result written, owned by the
//     caller), abandoned (caller gone, result still to come).
//   * Only the collector moves pending -> done and abandoned -> free; only the
//     caller moves pending -> abandoned and done -> free.  The two racing
//     transitions out of pending are CASes, so exactly one side wins.
//   * A token whose generation does not match the slot is stale and its
//     result is dropped (cannot happen unless a worker replays a message).
//   * A slot's Result is written only by the collector while the slot is
//     pending or abandoned, and read by the caller only after it saw `done`.
//
// Memory ordering
//   * collector: write result -> CAS state pending->done (seq_cst, includes
//     release) -> load `sleeping` (seq_cst) -> futex_wake if set.
//   * caller: store sleeping=1 (seq_cst) -> load state (seq_cst) -> futex_wait
//     on state.  Dekker's pattern: at least one side sees the other, so a wait
//     never misses the completion.  The caller reads the result after an
//     acquire load of `done`.
//   * `notify` is written by the caller before the request is pushed and
//     read by the collector after the result arrived: the rings'
//     release/acquire chain from that push to the result orders it.
//   * A slot taken for the HTTP front (Notify::front) carries the top bit of
//     its generation, so bit 63 of its token says "answer this as an HTTP
//     response" to whoever produces the final result (kTokenHttp, wire.hpp);
//     other slots keep that bit clear.  Generations count in the low 31 bits.
//   * The free list is guarded by a std::mutex; backlog is a relaxed counter
//     (a snapshot for reporting, never used for admission).
//   * The meter record (meter.hpp, the server's record): callers count into
//     its first line with relaxed fetch_add, the collector into its second
//     line and the latency histogram alone (relaxed stores).
#pragma once

#include <atomic>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "cancel_board.hpp"
#include "futex.hpp"
#include "meter.hpp"
#include "wire.hpp"

namespace mps {

class Ledger {
 public:
  enum State : uint32_t { kFree = 0, kPending = 1, kDone = 2, kAbandoned = 3 };

  // A request's result: what the collector wrote, what the caller takes.
  struct Result {
    uint32_t flags = 0;
    uint64_t aux = 0;
    std::string payload;
  };

  // Called (from the collector thread) with the flags and payload of a result
  // that nobody will take, so that the owner can release what it refers to.
  using Disposer = std::function<void(uint32_t flags, const std::string& payload)>;

  explicit Ledger(uint32_t capacity);

  uint32_t capacity() const { return capacity_; }
  uint32_t backlog() const { return in_use_.load(std::memory_order_relaxed); }

  // Who hears of a slot's completion besides a caller waiting on it: nobody,
  // the server's CompletionQueue (asyncio), or the HTTP front's listener.
  enum class Notify : uint8_t { none = 0, async = 1, front = 2 };

  // Takes a free slot: ok, backlog_full (none free and !wait),
  // backlog_timeout (waited until the deadline) or closed.  `notify` says
  // where the collector reports the slot's completion.  `now`, if not 0,
  // is the caller's clock reading for the slot's start (a run of slots
  // acquired together shares one reading instead of one each).
  Status acquire(bool wait, int64_t deadline_ns, uint32_t* idx, Notify notify = Notify::none,
                 int64_t now = 0);
  uint64_t token(uint32_t idx) const { return (uint64_t(slots_[idx].gen) << 32) | idx; }
  // The slot a token names; throws std::invalid_argument if the token is
  // out of range or stale (its slot was reused).
  uint32_t slot_of(uint64_t token) const;

  // ---- collector side
  // The result record of the request `token` names, cleared, if it still
  // expects a result; null otherwise.  *idx receives the slot.
  Result* open(uint64_t token, uint32_t* idx);
  // The result is written: hand it to its caller (or drop it).  Leaves the
  // wake-up to the collector, so that it can publish a whole batch of
  // results before waking anybody (a stream then wakes once per batch).
  struct Finished {
    bool wake;       // the owner sleeps: call wake(idx) after the batch
    Notify notify;   // whom to tell, besides (as it was acquired)
    bool delivered;  // the result is the slot's (false: its caller had given up, dropped)
  };
  // `now`, if not 0, is the caller's clock reading (one per chunk).
  Finished finish_quietly(uint32_t idx, int64_t now = 0);
  void wake(uint32_t idx) { futex_wake(&slots_[idx].state, INT_MAX, false); }

  // ---- caller side
  bool is_done(uint32_t idx) const { return slots_[idx].state.load(std::memory_order_acquire) == kDone; }
  // Spins `spin` rounds, then sleeps until done or the deadline.
  bool wait(uint32_t idx, int64_t deadline_ns, int spin);
  // Calls consume(Result&) on a done slot, then frees it (also if consume
  // throws).  consume may move the payload out.  Throws std::logic_error if
  // the slot is not done.
  template <class Consume>
  decltype(auto) take(uint32_t idx, Consume&& consume);
  // Calls look(const Result&) on a done slot without taking it (for its
  // owner, to decide how to take it).  Does nothing if the slot is not done.
  template <class Look>
  void peek(uint32_t idx, Look&& look) const {
    if (idx < capacity_ && is_done(idx)) look(slots_[idx].result);
  }
  // Frees a pending slot whose request never left the main process (e.g.
  // its payload could not be sent).
  void withdraw(uint32_t idx) { free_slot(idx); }
  // The caller gives up: true if the result will be dropped on arrival,
  // false if it is already done (the caller must then take() or discard()).
  // An abandoned request is also put on the cancel board (if set), so that
  // workers skip it if they have not started it yet.  `why` is what the
  // meter counts it as.
  enum class GiveUp { timed_out, cancelled };
  bool abandon(uint32_t idx, GiveUp why);
  // The caller gives up whatever the state: abandon(), or discard() if the
  // result is already there.
  void give_up(uint32_t idx, GiveUp why);
  // Drops the result of a done slot (through the disposer) and frees it.
  void discard(uint32_t idx);

  // ---- lifecycle
  // No new requests; wakes callers waiting for a slot.
  void close();
  bool closed() const { return closed_.load(std::memory_order_acquire); }
  // Whether the slot was taken for the HTTP front (the collector asks before
  // it writes a result: the front's results stay in the slot).
  bool for_front(uint32_t idx) const { return slots_[idx].notify == Notify::front; }
  // Completes every pending request with the given result and frees
  // abandoned ones.  For teardown, when no result can come any more.
  // Returns the tokens of the async requests it finished (for the
  // CompletionQueue); those of the HTTP front's go to *front if given.
  std::vector<uint64_t> fail_pending(uint32_t flags, const std::string& payload,
                                     std::vector<uint64_t>* front = nullptr);
  void set_disposer(Disposer d) { disposer_ = std::move(d); }
  // Where abandoned requests are posted for the workers (may be null; must
  // outlive the ledger).  Before the first request.
  void set_board(CancelBoard* board) { board_ = board; }
  // The server's meter record (may be null; must outlive the ledger).  Before
  // the first request.
  void set_meter(MeterRecord* m);
  // A result for a token that names no request in flight (stale or unknown).
  void note_stale() { collected(kServerLate); }  // the collector's
  // A refusal from acquire() was final: the request is refused.  Only the
  // caller knows (a refusal may be a probe before waiting, a wait may be cut
  // into slices, and a stream that meets a full backlog just waits, which is
  // flow control).
  void note_rejected() { count(kServerRejected); }

  // Snapshot for debug_info: (slot, state, age in ns) of slots in use.
  struct SlotSnapshot {
    uint32_t idx;
    uint32_t state;
    int64_t age_ns;
  };
  std::vector<SlotSnapshot> snapshot() const;

 private:
  struct Slot {
    std::atomic<uint32_t> state{kFree};
    std::atomic<uint32_t> sleeping{0};
    uint32_t gen = 0;
    Notify notify = Notify::none;
    Result result;
    int64_t t_start_ns = 0;
  };
  static_assert(std::atomic<uint32_t>::is_always_lock_free, "slot states are futex words");

  void free_slot(uint32_t idx, bool by_collector = false);
  // A caller-side count (any thread) / a collector-side count (its thread only).
  void count(ServerCount c) {
    if (meter_) add(meter_->own[c]);
  }
  void collected(ServerCount c) {
    if (meter_) bump(meter_->own[c]);
  }

  const uint32_t capacity_;
  std::unique_ptr<Slot[]> slots_;
  std::vector<uint32_t> free_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint32_t acquire_waiters_ = 0;
  std::atomic<uint32_t> in_use_{0};
  std::atomic<bool> closed_{false};
  Disposer disposer_;
  CancelBoard* board_ = nullptr;
  MeterRecord* meter_ = nullptr;
};

template <class Consume>
decltype(auto) Ledger::take(uint32_t idx, Consume&& consume) {
  if (idx >= capacity_ || !is_done(idx)) throw std::logic_error("take() on a request that is not done");
  struct Free {
    Ledger* l;
    uint32_t i;
    ~Free() { l->free_slot(i); }
  } free_after{this, idx};
  return consume(slots_[idx].result);
}

}  // namespace mps
