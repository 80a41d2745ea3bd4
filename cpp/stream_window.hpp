// stream_window.hpp — the ordered window of one Server.stream() call.
//
// A stream feeds requests ahead of its results (up to the ledger's capacity)
// and must hand results back in input order.  The window is the FIFO of the
// stream's requests: the feeding side appends (one or many at a time, one
// ring push for many), the draining side waits for the head and then takes
// the whole prefix of entries that are already done, so a burst of results
// costs one wake-up and one crossing into Python.
//
// Invariants
//   * Entries leave the window only from the front, only by drain() or
//     close(); every entry that held a ledger slot either has its result taken
//     by the drainer or is abandoned (close, per-item timeout), so no slot leaks.
//   * A "local" entry holds no slot: it stands for an input that failed before
//     it was sent (its error lives on the Python side, in the same order).
//   * After close(), submit() accepts nothing and frees what it acquired.
//   * One feeding thread and one draining thread may work concurrently
//     (Server.stream's feeder thread); the deque is guarded by a mutex that
//     is never held while waiting for a result.
//
// Memory ordering: slot results are published by Ledger::finish_quietly (seq_cst CAS)
// and observed with acquire loads in Ledger::wait/is_done; the deque itself
// is only touched under mu_.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <vector>

#include "ledger.hpp"
#include "ring.hpp"
#include "wire.hpp"

namespace mps {

class StreamWindow {
 public:
  struct Drained {
    Outcome outcome;
    uint32_t slot;  // valid for Outcome::ready: the caller must take() it from the ledger
  };

  StreamWindow(Ledger& ledger, Ring& entry, int64_t item_timeout_ns)
      : ledger_(ledger), entry_(entry), item_timeout_ns_(item_timeout_ns) {}
  ~StreamWindow() { close(); }

  // Sends msgs[0..n) in order (their ids are filled in here).  Takes a ledger
  // slot per message; when none is free, waits only if `wait` (until
  // deadline), and only for the first message.  Returns how many were
  // accepted; *st tells why it stopped (ok, backlog_full, backlog_timeout,
  // push_timeout, closed).
  // With may_block false, nothing waits: no slot wait, no ring-space wait
  // (a full ring gives push_timeout for the rest), so a caller can try first
  // without giving up what it holds (the GIL) and wait only if needed.
  size_t submit(OutMessage* msgs, size_t n, bool wait, int64_t deadline_ns, Status* st,
                bool may_block = true);

  // After submit(..., may_block=false) accepted k of n messages with status
  // st: whether a blocking submit of the rest would have waited where the
  // non-blocking one gave up (for a slot for the first message, when the
  // caller waits; or for ring space), so that the caller should retry the
  // rest with may_block=true.
  static bool worth_blocking(size_t k, size_t n, Status st, bool wait) {
    return k < n && ((st == Status::backlog_full && wait && k == 0) || st == Status::push_timeout);
  }

  // Sends `count` items as one chunk message (chunk.hpp): takes `count`
  // ledger slots — all of them or none, so that a chunk is never split —
  // and pushes one message whose payload is the chunk header (written here,
  // with the slots' tokens) followed by `blob` (parts[0..nparts), the
  // pickle of the items' values).  Waits for ring space only if may_block.
  // Returns count, or 0 with *st telling why (backlog_full when fewer than
  // `count` slots are free now: the caller sends the items singly instead).
  size_t submit_chunk(uint32_t count, const Slice* blob, size_t nparts, int64_t deadline_ns, Status* st,
                      bool may_block);

  // Appends an entry for an input that failed before it could be sent.
  void add_local();

  // Waits for the head (until its deadline; forever while the window is
  // empty and not finished), then moves the done prefix, up to max entries,
  // into out.  Returns the number appended (>= 1), or 0 with Outcome::end in
  // out when the window is empty and finished, or 0 with Outcome::pending
  // when wake_by came first (the caller checks for signals and calls again).
  size_t drain(size_t max, int spin, int64_t wake_by_ns, std::vector<Drained>& out);

  // The feeder will add nothing more.
  void finish();
  // The consumer is gone: abandon every outstanding request.
  void close();

  size_t size() const {
    std::lock_guard<std::mutex> lk(mu_);
    return entries_.size();
  }

 private:
  // One input of the stream, in input order: its ledger slot (or local) and deadline.
  struct InFlight {
    uint32_t slot;  // UINT32_MAX: local
    int64_t deadline_ns;
  };
  static constexpr uint32_t kNoSlot = UINT32_MAX;

  Ledger& ledger_;
  Ring& entry_;
  const int64_t item_timeout_ns_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<InFlight> entries_;
  bool finished_ = false;
  bool closed_ = false;
  std::vector<uint32_t> scratch_;
};

}  // namespace mps
