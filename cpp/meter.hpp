// meter.hpp — live counters of a running server, in shared memory: what
// every worker, router and the request book did, readable at any moment by
// the main process (Server.stats()) or by another process of the same user
// (python -m mpserver top), without stopping anyone.
//
// A server has one meter board: a memfd holding a header and `records`
// fixed-size records.  The main process hands out record numbers while the
// servlet tree starts (record 0 is the server's request book); each worker
// process gets the board's fd (ChildFd kFdMeter) and its record number.
// Whoever a record belongs to counts into it on the data path: a worker as it
// takes items and pushes results, the collector as it files results, a
// router as it routes.  The guardian adds what it saw happen *to* a worker
// (crashes, restarts) in a separate cache line of the same record.
//
// A record is the same layout for every kind of owner; what its counters
// mean is named by the owner's enum (WorkerCount, ServerCount, RouterCount,
// KeptCount).  Histograms have fixed log-spaced buckets: times in
// kTimeBoundsNs (1-2-5 steps from 1 µs to 50 s, then +Inf), sizes in powers
// of two (1 .. 1024, then +Inf).  A histogram's count is the sum of its
// buckets; `sum` is in nanoseconds (times) or items (sizes).
//
// Invariants
//   * A zero-filled board is valid: every counter 0.
//   * Each counter has one writer at a time: the record's owner (one worker
//     thread or process; the collector; one router thread per counter), or
//     the guardian under its mutex for the kept line.  So single-writer
//     counters are bumped with a relaxed load and store, no read-modify-write
//     instruction and no lock.  The exception is the request book's caller
//     line, written by every caller thread: add() (a relaxed fetch_add).
//     (At teardown the ledger's fail_pending() writes the collector's line
//     from another thread, after the collector was joined.)
//   * Records never move and are never freed while the board lives; a
//     restarted worker process keeps counting into its predecessor's record
//     (a record counts a worker *slot* over the server's life).
//
// Memory ordering: every access is relaxed.  A reader sees each counter at
// some recent value; counters of one record may be from slightly different
// instants (e.g. out momentarily ahead of a histogram's count), which a
// monitoring snapshot tolerates.  Nothing is ever decided from these
// numbers, and no data is published through them.
//
// Compiled out with -DMPSERVER_METERS=0 (for the benchmark that measures
// what counting costs): every update becomes a no-op, the layout stays.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

#include "shm.hpp"

#ifndef MPSERVER_METERS
#define MPSERVER_METERS 1
#endif

namespace mps {

inline constexpr bool kMetering = MPSERVER_METERS != 0;

// Upper bounds (inclusive) of the time buckets, in ns; a last bucket is +Inf.
inline constexpr std::array<int64_t, 24> kTimeBoundsNs = {
    1'000,         2'000,         5'000,         10'000,         20'000,         50'000,
    100'000,       200'000,       500'000,       1'000'000,      2'000'000,      5'000'000,
    10'000'000,    20'000'000,    50'000'000,    100'000'000,    200'000'000,    500'000'000,
    1'000'000'000, 2'000'000'000, 5'000'000'000, 10'000'000'000, 20'000'000'000, 50'000'000'000};
inline constexpr size_t kTimeBuckets = kTimeBoundsNs.size() + 1;
// Upper bounds of the size buckets: 1, 2, 4, ..., 1024; a last bucket is +Inf.
inline constexpr size_t kSizeBounds = 11;
inline constexpr size_t kSizeBuckets = kSizeBounds + 1;

// What a worker's record counts (its `own` line).
enum WorkerCount : uint32_t {
  kWorkerIn = 0,       // items taken off the input ring (including those passed on or skipped)
  kWorkerOut = 1,      // results (or errors) pushed
  kWorkerErrors = 2,   // of those, errors (including upstream errors passed on)
  kWorkerPassed = 3,   // items that arrived failed (an upstream error) and were passed on
  kWorkerSkipped = 4,  // items skipped because their caller had given up (cancel_board.hpp)
  kWorkerBatches = 5,  // units of work handed to user code (one item or one batch)
  kWorkerPid = 6,      // the process serving this slot now (0 for a thread)
};
// What the server's record (record 0) counts.  The first cache line is
// written by callers (any thread: add()), the second by the collector
// thread alone (bump()), so the two sides never fight over a line.
enum ServerCount : uint32_t {
  kServerAdmitted = 0,    // requests that got a slot
  kServerRejected = 1,    // refused for lack of a slot (backlog full, or no slot until the deadline)
  kServerTimedOut = 2,    // callers whose timeout passed before the result came
  kServerCancelled = 3,   // callers that gave up otherwise (async cancel, a stream closed early, Ctrl-C)
  kServerFreed = 4,       // slots callers gave back
  kServerCapacity = 7,    // the ledger's capacity (a constant)
  kServerFiled = 8,       // results the collector filed for a waiting caller
  kServerLate = 9,        // results nobody took (the caller had given up, or a stale token)
  kServerFreedLate = 10,  // slots the collector gave back (their results came for nobody)
};  // backlog = admitted - freed - freed_late
// What an ensemble router's record counts.
enum RouterCount : uint32_t {
  kRouterRouted = 0,  // items fanned out to the members (fan-out thread)
  kRouterJoined = 1,  // composites emitted (fan-in thread)
  kRouterLate = 2,    // member results that came after their entry was emitted (fan-in)
};
// What the guardian keeps about a worker (the `kept` line).
enum KeptCount : uint32_t {
  kKeptCrashes = 0,   // deaths while serving
  kKeptRestarts = 1,  // replacements started
  kKeptKilled = 2,    // kills by the watchdog (item_timeout)
};

template <size_t N>
struct MeterHistogram {
  std::atomic<uint64_t> bucket[N];
  std::atomic<uint64_t> sum;
};

struct MeterRecord {
  alignas(64) std::atomic<uint64_t> own[16];  // the owner's counters (enums above)
  alignas(64) std::atomic<uint64_t> kept[8];  // the guardian's (KeptCount)
  // Workers: items per unit of work; unused elsewhere.
  alignas(64) MeterHistogram<kSizeBuckets> sizes;
  // Workers: how long an item waited in the input ring (pushed -> taken).
  alignas(64) MeterHistogram<kTimeBuckets> waits;
  // Workers: taken -> answered, per item.  Server: admitted -> result filed.
  alignas(64) MeterHistogram<kTimeBuckets> times;
};

// Words of a record as read by read(): own, kept, then each histogram's
// buckets followed by its sum.
inline constexpr size_t kRecordWords = 16 + 8 + (kSizeBuckets + 1) + 2 * (kTimeBuckets + 1);

static_assert(std::is_standard_layout_v<MeterRecord> && std::is_trivially_destructible_v<MeterRecord>,
              "records are shared memory: plain layout, nobody destroys them");
static_assert(std::atomic<uint64_t>::is_always_lock_free, "counters are read across processes");
static_assert(sizeof(MeterRecord) % 64 == 0 && alignof(MeterRecord) == 64,
              "records start on cache lines, so two owners never share one");
static_assert(offsetof(MeterRecord, kept) - offsetof(MeterRecord, own) >= 64,
              "the guardian's counters never share a cache line with the owner's");

// Single-writer update: no read-modify-write instruction (see Invariants).
inline void bump(std::atomic<uint64_t>& c, uint64_t n = 1) {
  if constexpr (kMetering) c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}
// Update by several writers.
inline void add(std::atomic<uint64_t>& c, uint64_t n = 1) {
  if constexpr (kMetering) c.fetch_add(n, std::memory_order_relaxed);
}
inline void set(std::atomic<uint64_t>& c, uint64_t v) {
  if constexpr (kMetering) c.store(v, std::memory_order_relaxed);
}

inline size_t time_bucket(int64_t ns) {
  // The number of bounds below ns: 24 compares without a branch (the
  // compiler vectorises them), cheaper than a search that mispredicts.
  size_t i = 0;
  for (int64_t b : kTimeBoundsNs) i += size_t(ns > b);
  return i;
}
inline size_t size_bucket(uint64_t n) {
  if (n <= 1) return 0;
  const size_t b = size_t(64 - __builtin_clzll(n - 1));  // ceil(log2 n)
  return b < kSizeBounds ? b : kSizeBounds;
}

// Single-writer observations.
inline void observe_time(MeterHistogram<kTimeBuckets>& h, int64_t ns, uint64_t times = 1) {
  if constexpr (kMetering) {
    if (ns < 0) ns = 0;
    bump(h.bucket[time_bucket(ns)], times);
    bump(h.sum, uint64_t(ns) * times);
  }
}
inline void observe_size(MeterHistogram<kSizeBuckets>& h, uint64_t n) {
  if constexpr (kMetering) {
    bump(h.bucket[size_bucket(n)]);
    bump(h.sum, n);
  }
}

struct MeterBoardHeader {
  uint64_t magic;
  uint32_t records;
  uint32_t version;
  uint64_t pad[6];
};
static_assert(sizeof(MeterBoardHeader) == 64, "records start on a cache line");

class MeterBoard {
 public:
  // `records` records, zero (sparse memfd: untouched pages cost nothing).
  static std::unique_ptr<MeterBoard> create(uint32_t records);
  // Maps the board behind `fd` (takes ownership of fd): a worker process, or
  // a monitor in another process (which only reads).
  static std::unique_ptr<MeterBoard> attach(int fd);

  int fd() const { return fd_.get(); }
  uint32_t records() const { return header()->records; }
  MeterRecord& record(uint32_t i) const;  // throws std::out_of_range
  // A copy of record i, as kRecordWords words (see kRecordWords).
  std::vector<uint64_t> read(uint32_t i) const;

 private:
  MeterBoard(FdHandle fd, Mapping map) : fd_(std::move(fd)), map_(std::move(map)) {}
  MeterBoardHeader* header() const { return reinterpret_cast<MeterBoardHeader*>(map_.data()); }

  FdHandle fd_;
  Mapping map_;
};

}  // namespace mps
