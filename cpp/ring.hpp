// ring.hpp — the message ring: variable-size messages in shared memory,
// many producers and many consumers, across processes.
//
// Why not boost::lockfree::spsc_queue: it carries fixed-size elements between
// exactly one producer and one consumer and has no way to sleep.  Our edges
// carry pickled payloads of any size, are fed by several producers (callers'
// threads, upstream workers) and drained by several consumers (a servlet's
// workers), and idle consumers must sleep without burning a core.  The ring
// below keeps spsc_queue's core (two monotonically increasing positions, each
// written by one side) and adds framing, one lock per side and futex waits.
//
// Layout: [RingHeader, page-aligned][data: capacity bytes, mapped twice].
// A message is one or more frames; a frame is a FrameHeader then `len`
// payload bytes, padded to 8.  Frames never split at the wrap (the mirror
// mapping makes them contiguous).  A message larger than max_chunk() is cut
// into frames; its producer holds the producer lock and its consumer holds the
// consumer lock until the last frame, so frames of two messages never
// interleave and a message larger than the whole ring still passes through.
//
// Invariants
//   * head and tail are byte positions that only grow; 0 <= head - tail <= capacity.
//   * Only the producer-lock holder writes head; only the consumer-lock holder
//     writes tail.  Each is published with ONE release store after the bytes
//     it covers are written (producer) or fully read (consumer), so a process
//     that dies holding a side lock leaves the ring consistent.
//   * Bytes in [tail, head) are complete frames; a frame's header is written
//     before head covers it.  Frame lengths are checked on read: a corrupt
//     frame raises RingCorrupt, never reads outside the data area.
//
// Memory ordering
//   * producer: write frame bytes -> head.store(release) -> data_seq.fetch_add
//     (seq_cst) -> data_waiters.load(seq_cst) -> futex_wake if nonzero.
//   * consumer: s = data_seq.load -> check head (acquire) -> data_waiters++
//     (seq_cst) -> futex_wait(data_seq, s).  A publish after the check bumps
//     data_seq, so the wait returns at once; a publish before it is seen by
//     the check.  No wake-up is lost and none is paid for when nobody sleeps.
//   * The space side (tail, space_seq, space_waiters) mirrors this exactly.
//   * Recovery: a process that dies holding a side lock is recognised by the
//     lock's owner pid.  Its producer side may leave a multi-frame message
//     open: the recoverer (holding the producer lock) appends an abort frame.
//     Its consumer side may leave continuation frames at the tail: the next
//     consumer skips them (resync).  Single-frame messages need neither.
//   * pushed and popped (message counts, for monitoring) are relaxed: each is
//     written by its side's lock holder only; depth() may be off by the
//     messages in flight while it reads, never negative.
//   * closed is set with seq_cst and followed by bumping both sequences and
//     waking everybody; waiters re-check closed after every wake.
//     closed == 1: no more messages, consumers drain what is there.
//     closed == 2 (abort): consumers stop at once; what is left is discarded.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "shm.hpp"
#include "shm_mutex.hpp"

namespace mps {

// Low byte of a frame's flags is framing; callers own the other 24 bits.
inline constexpr uint32_t kFrameFirst = 1u << 0;
inline constexpr uint32_t kFrameLast = 1u << 1;
// Ends a multi-frame message whose producer died mid-way: consumers drop it.
inline constexpr uint32_t kFrameAbort = 1u << 2;
inline constexpr uint32_t kFramingMask = 0xffu;

struct FrameHeader {
  uint32_t len;    // payload bytes in this frame
  uint32_t flags;  // framing bits | caller flags
  uint64_t id;     // caller's message id (same in every frame of a message)
  uint64_t total;  // payload bytes of the whole message
  uint64_t aux;    // caller's extra word (routing, worker index, ...)
  int64_t stamp;   // when the message was pushed (now_ns; 0 with meters compiled out)
};
static_assert(sizeof(FrameHeader) == 40);

struct RingHeader {
  uint64_t magic;
  uint64_t capacity;  // data bytes, a power of two
  alignas(64) std::atomic<uint64_t> head;
  alignas(64) std::atomic<uint64_t> tail;
  alignas(64) std::atomic<uint32_t> data_seq;
  std::atomic<uint32_t> data_waiters;
  alignas(64) std::atomic<uint32_t> space_seq;
  std::atomic<uint32_t> space_waiters;
  alignas(64) std::atomic<uint32_t> closed;
  alignas(64) ShmMutex producer;
  // Written by the producer-lock holder: a multi-frame message is open
  // (first frame published, last not yet) — what recover_producer() ends.
  uint32_t producing;
  uint64_t producing_id;
  uint64_t producing_total;
  // Messages published so far (producer-lock holder, relaxed): depth() is
  // pushed - popped.
  std::atomic<uint64_t> pushed;
  alignas(64) ShmMutex consumer;
  // Set by recover_consumer(): drop leftover continuation frames of a message
  // whose consumer died mid-way, up to its last frame.
  uint32_t resync;
  // Messages consumed so far (consumer-lock holder, relaxed).
  std::atomic<uint64_t> popped;
};

// Layout promises of the shared header (every process maps the same bytes,
// and a zero-filled memfd must be a valid empty ring).
inline constexpr size_t kCacheLine = 64;
static_assert(std::is_standard_layout_v<RingHeader>, "RingHeader is shared memory: plain layout only");
static_assert(std::is_trivially_destructible_v<RingHeader>, "nobody destroys a shared header");
static_assert(std::atomic<uint64_t>::is_always_lock_free && std::atomic<uint32_t>::is_always_lock_free,
              "atomics shared across processes must be lock-free");
static_assert(offsetof(RingHeader, head) % kCacheLine == 0 && offsetof(RingHeader, tail) % kCacheLine == 0,
              "head and tail each start a cache line");
static_assert(offsetof(RingHeader, tail) - offsetof(RingHeader, head) >= kCacheLine,
              "the producer's and the consumer's positions never share a cache line");
static_assert(offsetof(RingHeader, data_seq) % kCacheLine == 0 &&
                  offsetof(RingHeader, space_seq) % kCacheLine == 0,
              "the two futex words live on cache lines of their own");
static_assert(offsetof(RingHeader, producer) % kCacheLine == 0 &&
                  offsetof(RingHeader, consumer) % kCacheLine == 0,
              "each side's lock starts a cache line");
static_assert(sizeof(FrameHeader) % 8 == 0, "frames are padded to 8 bytes: headers must keep that alignment");

struct RingCorrupt : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Slice {
  const char* data;
  size_t len;
};

// One message to push: its payload is the concatenation of `parts`.
struct OutMessage {
  uint64_t id;
  uint32_t flags;  // caller flags only (framing bits are ignored)
  uint64_t aux;
  const Slice* parts;
  size_t nparts;
};

// Receives consumed messages.  append() may be called several times per
// message (once per frame).  abort() replaces end() when the ring was closed
// in the middle of a multi-frame message.
class MessageSink {
 public:
  // When the message about to begin() was pushed (its frame's stamp), set by
  // the ring just before begin(): for the sinks that measure queue wait.
  int64_t pushed_at = 0;
  virtual ~MessageSink() = default;
  virtual void begin(uint64_t id, uint32_t flags, uint64_t aux, uint64_t total) = 0;
  virtual void append(const char* data, size_t len) = 0;
  virtual void end() = 0;
  virtual void abort() {}
};

enum class [[nodiscard]] PushStatus { ok, timeout, closed };

class Ring {
 public:
  // Creates a ring of at least `capacity` data bytes (rounded up to a power of two >= 64 KiB).
  static std::unique_ptr<Ring> create(size_t capacity, const std::string& name);
  // Maps the ring behind `fd`; the Ring takes ownership of fd.
  static std::unique_ptr<Ring> attach(int fd);

  int fd() const { return fd_.get(); }
  size_t capacity() const { return cap_; }
  size_t max_chunk() const { return cap_ / 4 - sizeof(FrameHeader); }

  // ---- producer side -------------------------------------------------
  // Pushes `n` messages in order under one hold of the producer lock.
  // The deadline bounds waiting for space before a message's first frame;
  // once a frame is written the message is always completed (unless the
  // ring is closed).  *written receives the number of complete messages.
  // `stamp` (now_ns) is the push time the frames carry; 0: the ring reads
  // the clock (once per call) — a caller that has just read it passes it.
  PushStatus push(const OutMessage* msgs, size_t n, int64_t deadline_ns, size_t* written = nullptr,
                  int64_t stamp = 0);
  // Like push() but never sleeps: returns timeout if there is no room now,
  // or when the next message needs several frames (which may have to wait).
  PushStatus try_push(const OutMessage* msgs, size_t n, size_t* written = nullptr, int64_t stamp = 0);

  // ---- consumer side -------------------------------------------------
  // Spins briefly (`spin` rounds of pause, then `yields` rounds of
  // sched_yield, which lets another runnable thread have the core), then
  // sleeps until the ring is non-empty, closed, or the deadline passes.
  // Returns true iff there is something to consume.
  bool wait_data(int64_t deadline_ns, int spin = 0, int yields = 0);
  // Consumes up to max_msgs complete messages that are already in the ring
  // (and waits for the remaining frames of a multi-frame message it has
  // started).  The caller must hold consumer_lock().
  size_t consume_locked(size_t max_msgs, MessageSink& sink);
  // Locks, consumes what is there (up to max_msgs), unlocks.
  size_t try_consume(size_t max_msgs, MessageSink& sink);
  ShmMutex& consumer_lock() { return h_->consumer; }

  // ---- recovery after a process died (it must have exited) -------------
  // Frees the consumer lock if `dead` held it; the rest of a message it was
  // reading is skipped by the next consumer.  Returns whether it held it.
  bool recover_consumer(int32_t dead);
  // Frees the producer lock if `dead` held it, ending a message it left
  // half-written with an abort frame.  Returns whether it held it.
  bool recover_producer(int32_t dead);

  // ---- tests and the fuzzer -------------------------------------------
  // Appends raw bytes at the head as if a producer had written them (they
  // need not be valid frames; consumers must reject them, never crash).
  // At most capacity() bytes; call on a ring nobody else uses.
  void load_raw_for_test(const char* bytes, size_t n);

  // ---- both ----------------------------------------------------------
  void close();
  // Closes and tells consumers to stop now, leaving unread messages behind.
  void abort();
  bool closed() const { return h_->closed.load(std::memory_order_seq_cst) != 0; }
  bool aborted() const { return h_->closed.load(std::memory_order_seq_cst) == 2; }
  // Closed, and nothing (more) will be consumed.
  bool finished() const { return closed() && (aborted() || empty()); }
  bool empty() const {
    return h_->head.load(std::memory_order_acquire) == h_->tail.load(std::memory_order_acquire);
  }
  size_t bytes_used() const {
    return size_t(h_->head.load(std::memory_order_acquire) - h_->tail.load(std::memory_order_acquire));
  }
  // Messages in the ring now (a snapshot for monitoring; see RingHeader::pushed).
  uint64_t depth() const {
    const uint64_t popped = h_->popped.load(std::memory_order_relaxed);
    const uint64_t pushed = h_->pushed.load(std::memory_order_relaxed);
    return pushed > popped ? pushed - popped : 0;
  }
  // Messages pushed into the ring over its life.
  uint64_t pushed() const { return h_->pushed.load(std::memory_order_relaxed); }

 private:
  Ring(FdHandle fd, Mapping map, size_t header_bytes, size_t cap);
  static size_t header_bytes();
  PushStatus push_impl(const OutMessage* msgs, size_t n, int64_t deadline_ns, bool may_sleep, size_t* written,
                       int64_t stamp);
  // Waits until `need` bytes are free.  Returns ok, timeout or closed.
  PushStatus wait_space(uint64_t head, size_t need, int64_t deadline_ns, bool may_sleep, uint64_t* published,
                        size_t* pending_msgs);
  void publish(uint64_t head, size_t msgs);
  void release_space(uint64_t tail);
  const FrameHeader* frame_at(uint64_t pos, uint64_t head) const;

  FdHandle fd_;
  Mapping map_;
  RingHeader* h_;
  char* data_;
  size_t cap_;
};

// Largest message a frame may announce; anything above is treated as corruption.
inline constexpr uint64_t kMaxMessageBytes = uint64_t(1) << 40;

inline constexpr size_t frame_bytes(size_t payload) {
  return (sizeof(FrameHeader) + payload + 7) & ~size_t(7);
}

}  // namespace mps
