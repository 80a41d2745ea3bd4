// claims.hpp — which items each worker holds right now, in shared memory, so
// that when a worker dies the items it held can be failed instead of lost.
//
// A table has one section per worker of a servlet (process or thread).  A
// worker claims each message as it takes it off its input ring — inside the
// ring's consumer critical section, before the ring's tail moves past it —
// and releases the claim once its result (or error) has been pushed.  When a
// worker dies, the guardian (main process) takes every claim still in its
// section and sends an error result for each.
//
// Invariants
//   * Only the worker owning a section writes it while that worker lives;
//     the guardian reads and clears it only after the worker is gone (a
//     reaped process), or on the worker's own thread (a thread worker
//     reporting that it was stopped), so there is no race.
//   * A zero-filled table is valid: every section empty.
//   * A claim is written before the message leaves the ring, so a worker
//     dying at any instant loses nothing: an item is either still in the
//     ring, or claimed, or its result was pushed — and at worst both (the
//     window between pushing a result and releasing the claim), which makes a
//     duplicate result that every consumer drops (ledger slots and ensemble
//     entries accept one result per item).
//   * Claims are appended at `high` and usually released in the order they
//     were made, so `low` (everything below it is free) keeps a release O(1)
//     amortised; `high` bounds every scan.
//   * An entry's `since` is when the worker took the item (CLOCK_MONOTONIC,
//     the same clock in every process): the guardian's watchdog reads the
//     oldest one of a *live* worker (oldest_since) to find a worker stuck on
//     an item for longer than its servlet's item_timeout.
//
// Memory ordering: an entry's fields are written before `used` is set with
// release; the guardian reads `used` with acquire.  Cross-process visibility
// after a worker's death needs nothing more (the process is gone).  The
// watchdog reads a live worker's section: `high` is an atomic the worker
// stores (relaxed; it is the only writer), `used` and `since` are atomics, so
// the watchdog sees each entry either free or with a `since` no later than
// the claim it belongs to — it can see an item as held a moment after its
// release, never as held longer than it was.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "shm.hpp"

namespace mps {

struct ClaimEntry {
  std::atomic<uint32_t> used;
  uint32_t pad;
  uint64_t id;
  uint64_t aux;
  std::atomic<int64_t> since;  // when the worker took the item (now_ns)
};

struct ClaimSection {
  std::atomic<uint32_t> high;  // entries [0, high) may be in use; new claims go at `high`
  uint32_t live;               // entries in use
  uint32_t low;                // entries [0, low) are free (release scans from here)
  uint32_t pad0;
  uint64_t pad[6];
};

static_assert(std::is_standard_layout_v<ClaimEntry> && sizeof(ClaimEntry) == 32,
              "claim entries are shared memory: fixed, plain layout");
static_assert(std::atomic<int64_t>::is_always_lock_free, "`since` is read across processes");
static_assert(std::is_standard_layout_v<ClaimSection> && sizeof(ClaimSection) == 64,
              "a section header fills exactly one cache line, so sections never share one");
static_assert(std::atomic<uint32_t>::is_always_lock_free, "`used` is read across processes");

class ClaimTable {
 public:
  // `slots` entries per worker: the most items one worker can hold at once.
  // The memfd is sparse: untouched pages cost nothing.
  static std::unique_ptr<ClaimTable> create(uint32_t workers, uint32_t slots);
  static std::unique_ptr<ClaimTable> attach(int fd);  // takes ownership of fd

  int fd() const { return fd_.get(); }
  uint32_t workers() const { return workers_; }
  uint32_t slots() const { return slots_; }

  // Worker side.  claim() returns false if the section is full (the item is
  // then unprotected; callers size the table so this does not happen).
  // `now` (now_ns, 0: read the clock) is when the worker took the item.
  bool claim(uint32_t worker, uint64_t id, uint64_t aux, int64_t now = 0);
  // Returns when the released item was claimed (0 if it was not held).
  int64_t release(uint32_t worker, uint64_t id);

  // Guardian side (the worker is gone): returns and clears its claims.
  std::vector<std::pair<uint64_t, uint64_t>> take(uint32_t worker);
  uint32_t held(uint32_t worker) const;
  // Watchdog (the worker may be running): when the worker took the oldest
  // item it still holds (now_ns clock), or 0 if it holds none.
  int64_t oldest_since(uint32_t worker) const;

 private:
  ClaimTable(FdHandle fd, Mapping map, uint32_t workers, uint32_t slots);
  ClaimSection* section(uint32_t w) const;
  ClaimEntry* entries(uint32_t w) const;

  FdHandle fd_;
  Mapping map_;
  uint32_t workers_, slots_;
};

}  // namespace mps
