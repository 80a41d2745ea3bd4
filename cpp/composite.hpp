// composite.hpp — the ensemble composite payload: one message carrying every
// member's result for one item.
//
// Layout (little-endian, as the host):
//   u32 magic 'MPSE' (kCompositeMagic), u32 members, u32 finished, u32 reserved;
//   then per member: u32 part flags (kPartMissing if that member had not
//   answered), u32 reserved, u64 length, `length` bytes padded to 8.
// Parts are member outputs verbatim: pickles, pickled errors, object
// references (main process only) or nested composites.
//
// Invariants: compose() output always parses; for_each_part() never reads
// outside [data, data + len) and reports a malformed payload (bad magic,
// truncated header or part, trailing bytes) by returning false — a corrupt
// composite is an error, never a crash.  No shared state: no memory-ordering
// concerns.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace mps {

inline constexpr uint32_t kCompositeMagic = 0x4553504d;  // "MPSE"
inline constexpr uint32_t kPartMissing = 0xffffffffu;

inline std::string compose(const std::vector<uint32_t>& part_flags, const std::vector<std::string>& parts,
                           uint32_t finished) {
  auto put32 = [](std::string& s, uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); };
  size_t total = 16;
  for (const auto& p : parts) total += 16 + ((p.size() + 7) & ~size_t(7));
  std::string s;
  s.reserve(total);
  put32(s, kCompositeMagic);
  put32(s, uint32_t(parts.size()));
  put32(s, finished);
  put32(s, 0);
  for (size_t i = 0; i < parts.size(); ++i) {
    put32(s, part_flags[i]);
    put32(s, 0);
    uint64_t len = parts[i].size();
    s.append(reinterpret_cast<const char*>(&len), 8);
    s.append(parts[i]);
    s.append((8 - parts[i].size() % 8) % 8, '\0');
  }
  return s;
}

struct CompositeHead {
  uint32_t members = 0;
  uint32_t finished = 0;
};

// Calls part(index, flags, data, len) for each member's part, in order.
// Returns false (possibly after some calls) if the payload is malformed.
template <class Part>
bool for_each_part(const char* data, size_t len, CompositeHead* head, Part&& part) {
  if (len < 16) return false;
  uint32_t magic, n, finished;
  std::memcpy(&magic, data, 4);
  std::memcpy(&n, data + 4, 4);
  std::memcpy(&finished, data + 8, 4);
  if (magic != kCompositeMagic) return false;
  if (head) *head = CompositeHead{n, finished};
  size_t off = 16;
  for (uint32_t i = 0; i < n; ++i) {
    if (len - off < 16) return false;
    uint32_t flags;
    uint64_t plen;
    std::memcpy(&flags, data + off, 4);
    std::memcpy(&plen, data + off + 8, 8);
    off += 16;
    if (plen > len - off) return false;
    const size_t padded = (size_t(plen) + 7) & ~size_t(7);
    if (padded > len - off) return false;
    part(i, flags, data + off, size_t(plen));
    off += padded;
  }
  return off == len;
}

}  // namespace mps
