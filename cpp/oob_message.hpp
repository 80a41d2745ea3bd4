// oob_message.hpp — the layout of a message that carries a pickle (protocol
// 5) together with its out-of-band buffers, so that large bytes-like data
// (numpy arrays, anything pickled through a PickleBuffer) is copied once, straight from the
// sender's objects into the ring, instead of being copied into the pickle
// first.
//
// Layout (little-endian, offsets relative to the payload's first byte):
//
//   u32 n            number of sections: 1 (the pickle) + number of buffers
//   u32 reserved     0
//   u64 len[n]       byte length of each section
//   ...padding to kOobAlign...
//   section 0 (the pickle), padding to kOobAlign, section 1, padding, ...
//
// Invariants
//   * Every section starts at a multiple of kOobAlign, so a receiver that
//     copies the payload into a kOobAlign-aligned allocation can hand the
//     sections to numpy as aligned arrays without another copy.
//   * oob_layout() rejects anything whose sections do not fit inside the
//     payload: a corrupt message is refused, never read out of bounds.
//   * Padding bytes are zero (they are copied from kOobZeros).
// No memory-ordering concerns: the message is built and parsed by one thread;
// the ring publishes it (see ring.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace mps {

inline constexpr size_t kOobAlign = 16;
inline constexpr uint32_t kOobMaxSections = 1u << 16;
inline constexpr char kOobZeros[kOobAlign] = {};

inline size_t oob_pad(size_t n) { return (kOobAlign - n % kOobAlign) % kOobAlign; }

// The directory (header, lengths and its padding) for sections of `lens`.
inline std::string oob_directory(const std::vector<size_t>& lens) {
  std::string d;
  const uint32_t n = uint32_t(lens.size());
  const uint32_t zero = 0;
  d.append(reinterpret_cast<const char*>(&n), 4);
  d.append(reinterpret_cast<const char*>(&zero), 4);
  for (size_t len : lens) {
    const uint64_t l = len;
    d.append(reinterpret_cast<const char*>(&l), 8);
  }
  d.append(oob_pad(d.size()), '\0');
  return d;
}

struct OobSection {
  size_t offset;
  size_t length;
};

// The sections of an out-of-band message of `len` bytes; false if malformed.
inline bool oob_layout(const char* data, size_t len, std::vector<OobSection>* out) {
  if (len < 8) return false;
  uint32_t n;
  std::memcpy(&n, data, 4);
  if (n == 0 || n > kOobMaxSections) return false;
  const size_t dir = 8 + size_t(n) * 8;
  if (dir > len) return false;
  size_t off = dir + oob_pad(dir);
  out->clear();
  for (uint32_t i = 0; i < n; ++i) {
    uint64_t l;
    std::memcpy(&l, data + 8 + size_t(i) * 8, 8);
    if (off > len || l > len - off) return false;
    out->push_back({off, size_t(l)});
    off += size_t(l);
    off += oob_pad(off);
  }
  return true;
}

}  // namespace mps
