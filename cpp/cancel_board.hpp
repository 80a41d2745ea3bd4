// cancel_board.hpp — which requests nobody waits for any more, in shared
// memory, so that workers skip them instead of doing work for nobody.
//
// A caller that gives up on a request (its timeout passed, its asyncio task
// was cancelled, its stream was closed) abandons the request's ledger slot;
// the ledger then also writes the request's token into the board's entry for
// that slot.  A worker about to start an item of a request token looks the
// token up: if it is on the board, the worker does not run the item but
// passes on a "dropped" error instead (the item still has to reach the
// collector, which frees the abandoned slot — so the request leaves the
// backlog when the item leaves the pipeline, as documented).
//
// Invariants
//   * entry[slot] holds the token of the last request abandoned in that slot
//     (0: none).  A token names one request for ever (the slot's generation
//     is part of it), so an entry never needs clearing: a later request in
//     the same slot has another token and does not match.
//   * Only the main process writes entries; every worker reads them.  A
//     zero-filled board is valid (nothing abandoned).
//   * Only ids that are request tokens may be looked up: the entry ring of a
//     server and the stages that carry its tokens on (not the members of an
//     ensemble, whose messages carry the router's own tickets).
//
// Memory ordering: entries are written and read relaxed.  A worker that
// reads an old value runs an item whose caller just left (as before the
// board existed); one that reads the new value skips an item nobody takes.
// Both outcomes are correct, so no ordering is needed.  `dropped` is a
// relaxed counter.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <type_traits>

#include "shm.hpp"

namespace mps {

struct CancelBoardHeader {
  uint64_t magic;
  uint32_t slots;
  uint32_t pad0;
  std::atomic<uint64_t> dropped;  // items workers skipped
  uint64_t pad[5];
};
static_assert(std::is_standard_layout_v<CancelBoardHeader> && sizeof(CancelBoardHeader) == 64,
              "the board is shared memory: plain layout, entries start on a cache line");
static_assert(std::atomic<uint64_t>::is_always_lock_free, "entries are read across processes");

class CancelBoard {
 public:
  static std::unique_ptr<CancelBoard> create(uint32_t slots);
  static std::unique_ptr<CancelBoard> attach(int fd);  // takes ownership of fd

  int fd() const { return fd_.get(); }
  uint32_t slots() const { return header()->slots; }

  // Main process: the request with this token was given up.
  void mark(uint64_t token) {
    const uint32_t slot = uint32_t(token & 0xffffffffu);
    if (slot < slots()) entries()[slot].store(token, std::memory_order_relaxed);
  }
  // Workers: is this request given up?  (Counts it as dropped if so.)
  bool take_if_abandoned(uint64_t token) {
    const uint32_t slot = uint32_t(token & 0xffffffffu);
    if (slot >= slots() || entries()[slot].load(std::memory_order_relaxed) != token) return false;
    header()->dropped.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  uint64_t dropped() const { return header()->dropped.load(std::memory_order_relaxed); }

 private:
  CancelBoard(FdHandle fd, Mapping map) : fd_(std::move(fd)), map_(std::move(map)) {}
  CancelBoardHeader* header() const { return reinterpret_cast<CancelBoardHeader*>(map_.data()); }
  std::atomic<uint64_t>* entries() const {
    return reinterpret_cast<std::atomic<uint64_t>*>(map_.data() + sizeof(CancelBoardHeader));
  }

  FdHandle fd_;
  Mapping map_;
};

}  // namespace mps
