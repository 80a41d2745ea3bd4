// ensemble_router.hpp — fan-out and fan-in of an EnsembleServlet, in C++.
//
// An ensemble owns an input ring, one input ring per member (created by the
// members), and a join ring that every member writes its results to.  The
// router runs two threads of the main process, neither of which touches
// Python:
//
//   fan-out  takes each message off the input ring.  An upstream error goes
//            straight to the output (it short-circuits the ensemble).  Any
//            other message opens an entry in the table (its id and aux, one
//            empty part per member) and is pushed, unchanged, to every
//            member's input ring under a ticket naming (entry, member).
//   fan-in   takes each member result off the join ring and files it in the
//            entry its ticket names.  When every member has answered — or,
//            with fail_fast, on the first error — it pushes ONE composite
//            message to the output under the original id and aux, and frees
//            the entry.  Results arriving for an entry already emitted carry
//            a stale generation and are dropped.
//
// The result is a composite payload (composite.hpp) with frame flags
// kFlagEnsemble, plus kFlagError when the item failed: fail_fast and some
// member failed, or every member failed.  Python decodes it (python/mpserver/_wire/codec.py).
//
// Invariants
//   * ticket = generation (24 bits) << 40 | entry index (32 bits) << 8 |
//     member (8 bits); so an ensemble has at most 255 members.
//   * An entry is emitted exactly once; emission frees it and bumps its
//     generation in the same critical section.
//   * Entries in use <= items inside the ensemble, which the server's
//     capacity bounds; the table grows to that and is reused (std::deque
//     keeps references stable while it grows).
//   * Messages may hold references the owner tracks (the bindings' object
//     handles: a ring feeding N by-reference members carries N references
//     per message).  Every message the router drops, and every reference a
//     pass-through does not forward, goes to the disposer, outside the lock.
//   * The fan-out thread ends when the input ring is finished (closed and
//     drained, or aborted); the fan-in thread when the join ring is.  The
//     owner closes the join ring only after every member stopped, so no
//     result is lost on an orderly stop.
//
// Threading and memory ordering: the table is guarded by one std::mutex,
// held for bookkeeping only, never across a ring push (pushes may sleep).
// Payload bytes cross processes through the rings, whose release/acquire
// pairs order them (ring.hpp).  Counters are relaxed (reporting only).
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "composite.hpp"
#include "message_buffer.hpp"
#include "meter.hpp"
#include "ring.hpp"
#include "wire.hpp"

namespace mps {

class EnsembleRouter {
 public:
  // members: each member's input ring.  join: where members write results.
  // output: where the ensemble's results go.  The rings must outlive the router.
  EnsembleRouter(Ring& input, std::vector<Ring*> members, Ring& join, Ring& output, bool fail_fast);
  ~EnsembleRouter();
  EnsembleRouter(const EnsembleRouter&) = delete;
  EnsembleRouter& operator=(const EnsembleRouter&) = delete;

  // Receives a message nobody will read and how many references of it to release.
  using Disposer = std::function<void(const OwnedMessage&, int count)>;
  // Must be set before start().
  void set_disposer(Disposer d) { disposer_ = std::move(d); }
  // The ensemble's meter record (meter.hpp: RouterCount); may be null, must
  // outlive the router.  Before start().  Fan-out counts `routed`, fan-in
  // `joined` and `late`: one writer per counter.
  void set_meter(MeterRecord* m) { meter_ = m; }

  void start();
  // Returns once the input ring is finished and everything was forwarded.
  void join_fanout();
  // Returns once the join ring is finished and every result was emitted.
  void join_fanin();

  uint64_t emitted() const { return emitted_.load(std::memory_order_relaxed); }
  uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }
  size_t open_entries() const;

 private:
  // One item whose members' results are being gathered.
  struct Gathering {
    uint64_t id = 0;
    uint64_t aux = 0;
    uint32_t gen = 0;
    uint32_t finished = 0;
    uint32_t failed = 0;
    bool open = false;
    std::vector<uint32_t> part_flags;
    std::vector<std::string> parts;
  };

  static uint64_t ticket(uint32_t gen, uint32_t idx, uint32_t member) {
    return (uint64_t(gen & 0xffffffu) << 40) | (uint64_t(idx) << 8) | member;
  }

  void fan_out();
  void fan_in();
  // Opens an entry for a message; returns its ticket base (member 0).
  uint64_t open_entry(const OwnedMessage& m);
  // Files one member result; appends the composite to `out` when the entry
  // is done, or the message to `dropped` when nobody expects it.
  void file_result(OwnedMessage& m, std::vector<OwnedMessage>& out, std::vector<OwnedMessage>& dropped);
  void push_all(Ring& ring, std::vector<OwnedMessage>& msgs);
  void dispose(const OwnedMessage& m, int count) {
    if (disposer_ && count > 0) disposer_(m, count);
  }

  Ring& input_;
  std::vector<Ring*> members_;
  Ring& join_;
  Ring& output_;
  const bool fail_fast_;
  Disposer disposer_;
  MeterRecord* meter_ = nullptr;

  mutable std::mutex mu_;
  std::deque<Gathering> table_;
  std::vector<uint32_t> free_;

  std::thread fanout_, fanin_;
  std::atomic<uint64_t> emitted_{0};
  std::atomic<uint64_t> dropped_{0};
};

}  // namespace mps
