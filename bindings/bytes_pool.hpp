// bytes_pool.hpp — the collector's PayloadHome for large raw-bytes results.
//
// Python bytes objects are allocated ahead of time by the thread that takes
// results (with the GIL) and filled by the collector (without it), so a
// large result is copied once, from the ring into the object the caller
// gets.  A filled object travels in its ledger slot as an object reference
// (kFlagObject | kFlagRaw).
//
// Invariants
//   * An object in the pool is referenced by the pool alone and is
//     unreachable from Python, so the collector may write its bytes and
//     shrink its size without the GIL.
//   * Sizes adapt to the traffic: every large raw result taken asks for one
//     more object of its size (two if it came without one), up to
//     kMaxObjects objects and kMaxBytes bytes; an object serves a result of
//     its size or up to 1/8 smaller.
//
// Threading: the free list is guarded by a std::mutex; acquire() runs on the
// collector thread, taken() and clear() with the GIL on any thread.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <mutex>
#include <string>
#include <vector>

#include "../cpp/payload_home.hpp"

namespace mpb {

class BytesPool : public mps::PayloadHome {
 public:
  static constexpr size_t kMaxObjects = 64;
  static constexpr size_t kMaxBytes = 256u << 20;

  ~BytesPool() override { clear(); }

  char* acquire(uint32_t flags, uint64_t total, uint32_t* slot_flags, std::string* slot_payload) override;
  void abandon(uint32_t slot_flags, const std::string& slot_payload) override;

  // With the GIL: a large raw result of `size` bytes was taken; `missed`
  // if it came without a home (the pool had none to offer).
  void taken(size_t size, bool missed);
  // With the GIL, after the collector has stopped.
  void clear();

 private:
  std::mutex mu_;
  std::vector<PyObject*> free_;
  size_t bytes_ = 0;
};

}  // namespace mpb
