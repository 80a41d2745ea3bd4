// chunk.hpp — several items in one message: the layout of a chunk, and of the
// part of it that each item's ledger slot receives.
//
// A stream with a deep backlog of small items sends a run of them as one
// message (kFlagChunk): one pickle of the run's values, one ring hand-off,
// one wake-up.  The worker that takes it runs the items one by one and
// answers with one chunk message of results (one pickle of their values),
// which the collector files item by item into the items' ledger slots.
// Each item keeps its own request token, so order, timeouts, crash reports
// (the worker claims every token of the chunk), and the collector's rule of
// one result per token are those of single items.
//
// Chunk payload (little-endian, 8-byte aligned header):
//
//     u32 count | u32 reserved (0) | u64 token[count] | u8 status[count],
//     padded with zeros to a multiple of 8 | blob (a pickle of a list of
//     `count` values)
//
// `status[i]` is 0 for a value, 1 when value i is the encoded error of item i
// (the bytes a worker's codec makes for an exception).  Inputs carry 0 only.
// The frame's own id is token[0] (so a stale chunk is recognisable).
//
// Part payload (what the collector writes into one item's slot, with
// kFlagChunk, plus kFlagError when the item's status is 1):
//
//     u64 key (token[0] of the chunk) | u32 index | u32 has_blob | blob?
//
// Exactly one slot of a chunk gets the blob: the first whose result is
// accepted (the ledger says so), so a slot whose caller gave up never takes
// the blob with it.  Items of one chunk are consecutive in the stream's
// window, so the window's drainer meets that slot first and keeps the
// decoded list for the rest (bindings/requests.cpp).
//
// No memory-ordering concerns: plain bytes, read by whoever holds them.
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace mps {

struct ChunkHeader {
  uint32_t count;
  uint32_t reserved;
};
static_assert(sizeof(ChunkHeader) == 8, "the chunk header is part of the wire format");

struct ChunkPartHeader {
  uint64_t key;
  uint32_t index;
  uint32_t has_blob;
};
static_assert(sizeof(ChunkPartHeader) == 16, "the part header is part of the wire format");

// Chunks never hold more items than this (a stream's chunk size is capped
// far below it; the limit bounds what a corrupt header can make us read).
inline constexpr uint32_t kMaxChunkItems = 4096;

inline size_t chunk_status_bytes(uint32_t count) { return (size_t(count) + 7) & ~size_t(7); }
inline size_t chunk_head_bytes(uint32_t count) {
  return sizeof(ChunkHeader) + size_t(count) * 8 + chunk_status_bytes(count);
}

// A parsed chunk payload (pointers into the bytes it was parsed from).
struct ChunkView {
  uint32_t count = 0;
  const char* tokens = nullptr;  // count u64, possibly unaligned
  const uint8_t* status = nullptr;
  const char* blob = nullptr;
  size_t blob_len = 0;

  uint64_t token(uint32_t i) const {
    uint64_t t;
    std::memcpy(&t, tokens + size_t(i) * 8, 8);
    return t;
  }
};

// Throws std::runtime_error on a payload that is not a well-formed chunk.
inline ChunkView parse_chunk(const char* data, size_t len) {
  ChunkHeader h;
  if (len < sizeof h) throw std::runtime_error("chunk message too short");
  std::memcpy(&h, data, sizeof h);
  if (h.count == 0 || h.count > kMaxChunkItems || h.reserved != 0)
    throw std::runtime_error("corrupt chunk header");
  const size_t head = chunk_head_bytes(h.count);
  if (len < head) throw std::runtime_error("chunk message too short");
  ChunkView v;
  v.count = h.count;
  v.tokens = data + sizeof h;
  v.status = reinterpret_cast<const uint8_t*>(data + sizeof h + size_t(h.count) * 8);
  v.blob = data + head;
  v.blob_len = len - head;
  return v;
}

// The header of a chunk of `count` items (tokens and statuses), to which
// the blob is appended by the caller.
inline std::string chunk_head(const uint64_t* tokens, const uint8_t* status, uint32_t count) {
  std::string out(chunk_head_bytes(count), '\0');
  ChunkHeader h{count, 0};
  std::memcpy(out.data(), &h, sizeof h);
  std::memcpy(out.data() + sizeof h, tokens, size_t(count) * 8);
  if (status) std::memcpy(out.data() + sizeof h + size_t(count) * 8, status, count);
  return out;
}

}  // namespace mps
