// payload_home.hpp — lets the embedding choose where a large result is
// written when it leaves the output ring.
//
// The collector copies every result out of the ring into its ledger slot.
// For a large result that would be a second copy later (slot -> the object
// the caller gets); a PayloadHome hands the collector the final destination
// instead (the bindings: a pre-allocated Python bytes object), so the payload
// is copied once.  The engine stays free of Python: to it a home is memory
// plus the few bytes the slot stores to name it.
//
// Invariants
//   * acquire() either returns null (the collector uses the slot's string)
//     or returns `total` writable bytes, and has set the slot's flags and
//     payload to describe the home; the collector then writes exactly `total`
//     bytes there before finishing the slot.
//   * abandon() undoes one acquire() whose message was aborted mid-way; the
//     slot's payload still names the home.
//   * Both are called only on the collector thread.  Implementations that
//     share state with other threads lock it themselves.
// Memory ordering: the collector finishes the slot with Ledger::finish_quietly
// (seq_cst), which publishes the bytes written into the home to the thread
// that takes the slot.
#pragma once

#include <cstdint>
#include <string>

#include "wire.hpp"

namespace mps {

class PayloadHome {
 public:
  virtual ~PayloadHome() = default;
  // Destination for a `total`-byte message with `flags`, or null.  On success
  // *slot_flags and *slot_payload are what the ledger slot will hold.
  virtual char* acquire(uint32_t flags, uint64_t total, uint32_t* slot_flags, std::string* slot_payload) = 0;
  virtual void abandon(uint32_t slot_flags, const std::string& slot_payload) = 0;
};

}  // namespace mps
