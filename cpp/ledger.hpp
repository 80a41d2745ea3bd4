// ledger.hpp — the main process's book of requests in flight.
//
// A Server has `capacity` slots.  A request takes a free slot, its id travels
// with the payload through the servlet graph as a token (generation << 32 |
// slot index), and the collector writes the result into the slot.  The slot
// is freed when the caller takes the result, or, if the caller gave up
// (timeout, cancellation, early exit from a stream), when the result arrives.
// So backlog() counts an abandoned request until it leaves the pipeline, as
// mpservice does.
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
//   * payload/flags/aux of a slot are written only by the collector while the
//     slot is pending or abandoned, and read by the caller only after it saw
//     `done`.
//
// Memory ordering
//   * collector: write payload -> CAS state pending->done (seq_cst, includes
//     release) -> load `sleeping` (seq_cst) -> futex_wake if set.
//   * caller: store sleeping=1 (seq_cst) -> load state (seq_cst) -> futex_wait
//     on state.  Dekker's pattern: at least one side sees the other, so a wait
//     never misses the completion.  The caller reads the payload after an
//     acquire load of `done`.
//   * The free list is guarded by a std::mutex; backlog is a relaxed counter
//     (a snapshot for reporting, never used for admission).
#pragma once

#include <atomic>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "futex.hpp"

namespace mps {

class Ledger {
 public:
  enum State : uint32_t { kFree = 0, kPending = 1, kDone = 2, kAbandoned = 3 };

  struct Slot {
    std::atomic<uint32_t> state{kFree};
    std::atomic<uint32_t> sleeping{0};
    uint32_t gen = 0;
    uint32_t flags = 0;
    uint64_t aux = 0;
    std::string payload;
    int64_t t_start_ns = 0;
    // Set by an async caller between acquire() and pushing the request: the
    // collector then reports the slot's completion on the CompletionQueue.
    // Ordered by the rings' release/acquire chain from that push to the result.
    bool notify_async = false;
  };

  enum class AcquireStatus { ok, full, timeout, closed };

  // Called (from the collector thread) with the flags and payload of a result
  // that nobody will take, so that the owner can release what it refers to.
  using Disposer = std::function<void(uint32_t flags, const std::string& payload)>;

  explicit Ledger(uint32_t capacity);

  uint32_t capacity() const { return capacity_; }
  uint32_t backlog() const { return in_use_.load(std::memory_order_relaxed); }

  // Takes a free slot.  wait=false: returns `full` at once when none is free.
  AcquireStatus acquire(bool wait, int64_t deadline_ns, uint32_t* idx);
  uint64_t token(uint32_t idx) const { return (uint64_t(slots_[idx].gen) << 32) | idx; }
  Slot& slot(uint32_t idx) { return slots_[idx]; }

  // ---- collector side
  // Returns the slot a token refers to if it still expects a result.
  Slot* lookup(uint64_t token);
  // The result is in the slot: hand it to its caller (or drop it).
  void finish(Slot& s);
  // Like finish(), but leaves the wake-up to the caller: returns true if the
  // slot's owner sleeps and must be woken with wake(s).  Lets the collector
  // publish a whole batch of results before waking anybody, so a stream
  // wakes once for the batch instead of once per result.
  bool finish_quietly(Slot& s);
  void wake(Slot& s) { futex_wake(&s.state, INT_MAX, false); }

  // ---- caller side
  bool is_done(uint32_t idx) const {
    return slots_[idx].state.load(std::memory_order_acquire) == kDone;
  }
  // Spins `spin` rounds, then sleeps until done or the deadline.
  bool wait(uint32_t idx, int64_t deadline_ns, int spin);
  // Frees a done slot after its result was taken, or a pending slot whose
  // request never left the main process (e.g. its payload could not be sent).
  void release(uint32_t idx);
  // The caller gives up: true if the result will be dropped on arrival,
  // false if it is already done (the caller must then release()).
  bool abandon(uint32_t idx);
  // Drops the result of a done slot (through the disposer) and frees it.
  void discard(uint32_t idx);

  // ---- lifecycle
  // No new requests; wakes callers waiting for a slot.
  void close();
  bool closed() const { return closed_.load(std::memory_order_acquire); }
  // Completes every pending request with the given result and frees
  // abandoned ones.  For teardown, when no result can come any more.
  // Returns the tokens of the async requests it finished (for the CompletionQueue).
  std::vector<uint64_t> fail_pending(uint32_t flags, const std::string& payload);
  void set_disposer(Disposer d) { disposer_ = std::move(d); }

  // Snapshot for debug_info: (slot, state, age in ns) of slots in use.
  struct Entry {
    uint32_t idx;
    uint32_t state;
    int64_t age_ns;
  };
  std::vector<Entry> snapshot() const;

 private:
  void free_slot(Slot& s, uint32_t idx);

  const uint32_t capacity_;
  std::unique_ptr<Slot[]> slots_;
  std::vector<uint32_t> free_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint32_t acquire_waiters_ = 0;
  std::atomic<uint32_t> in_use_{0};
  std::atomic<bool> closed_{false};
  Disposer disposer_;
};

}  // namespace mps
