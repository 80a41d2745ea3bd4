#include "ring.hpp"

#include <sched.h>

#include <climits>
#include <cstring>
#include <new>

#include "meter.hpp"

namespace mps {

namespace {
constexpr uint64_t kMagic = 0x6d7073726e673033ULL;  // "mpsrng03"
constexpr size_t kMinCapacity = 64 * 1024;

size_t round_pow2(size_t n) {
  size_t c = kMinCapacity;
  while (c < n) c <<= 1;
  return c;
}
}  // namespace

size_t Ring::header_bytes() { return round_up_pages(sizeof(RingHeader)); }

Ring::Ring(FdHandle fd, Mapping map, size_t hdr, size_t cap)
    : fd_(std::move(fd)), map_(std::move(map)), cap_(cap) {
  h_ = reinterpret_cast<RingHeader*>(map_.data());
  data_ = map_.data() + hdr;
}

std::unique_ptr<Ring> Ring::create(size_t capacity, const std::string& name) {
  const size_t cap = round_pow2(capacity);
  const size_t hdr = header_bytes();
  FdHandle fd(create_memfd(name, hdr + cap));
  Mapping m = map_mirrored(fd.get(), hdr, cap);
  // The memfd is zero-filled, which is a valid state for every atomic and
  // mutex in the header; only the immutable fields need writing.
  auto* h = new (m.data()) RingHeader();
  h->magic = kMagic;
  h->capacity = cap;
  return std::unique_ptr<Ring>(new Ring(std::move(fd), std::move(m), hdr, cap));
}

std::unique_ptr<Ring> Ring::attach(int raw_fd) {
  FdHandle fd(raw_fd);
  const size_t hdr = header_bytes();
  const size_t size = fd_size(fd.get());
  if (size <= hdr) throw RingCorrupt("ring fd too small");
  const size_t cap = size - hdr;
  if ((cap & (cap - 1)) != 0) throw RingCorrupt("ring capacity is not a power of two");
  Mapping m = map_mirrored(fd.get(), hdr, cap);
  auto* h = reinterpret_cast<RingHeader*>(m.data());
  if (h->magic != kMagic || h->capacity != cap) throw RingCorrupt("not an mpserver ring");
  return std::unique_ptr<Ring>(new Ring(std::move(fd), std::move(m), hdr, cap));
}

// ---------------------------------------------------------------- producer

void Ring::publish(uint64_t head, size_t msgs) {
  if (msgs) h_->pushed.store(h_->pushed.load(std::memory_order_relaxed) + msgs, std::memory_order_relaxed);
  h_->head.store(head, std::memory_order_release);
  h_->data_seq.fetch_add(1, std::memory_order_seq_cst);
  if (h_->data_waiters.load(std::memory_order_seq_cst) != 0) {
    // One wake per published message: a consumer that takes several
    // messages just leaves the others' sleepers to find an empty ring.
    futex_wake(&h_->data_seq, msgs > INT_MAX ? INT_MAX : int(msgs ? msgs : 1), true);
  }
}

PushStatus Ring::wait_space(uint64_t head, size_t need, int64_t deadline_ns, bool may_sleep,
                            uint64_t* published, size_t* pending_msgs) {
  auto room = [&] { return cap_ - size_t(head - h_->tail.load(std::memory_order_acquire)); };
  if (room() >= need) return PushStatus::ok;
  // Let consumers see what we have written so far before we wait for them.
  if (*published != head) {
    publish(head, *pending_msgs);
    *published = head;
    *pending_msgs = 0;
  }
  for (int i = 0; i < 200; ++i) {
    if (room() >= need) return PushStatus::ok;
    cpu_relax();
  }
  for (;;) {
    if (closed()) return PushStatus::closed;
    if (!may_sleep) return PushStatus::timeout;
    uint32_t s = h_->space_seq.load(std::memory_order_seq_cst);
    if (room() >= need) return PushStatus::ok;
    h_->space_waiters.fetch_add(1, std::memory_order_seq_cst);
    bool ok = futex_wait_until(&h_->space_seq, s, deadline_ns, true);
    h_->space_waiters.fetch_sub(1, std::memory_order_seq_cst);
    if (room() >= need) return PushStatus::ok;
    if (!ok) return PushStatus::timeout;
  }
}

PushStatus Ring::push_impl(const OutMessage* msgs, size_t n, int64_t deadline_ns, bool may_sleep,
                           size_t* written, int64_t stamp_ns) {
  if (written) *written = 0;
  if (closed()) return PushStatus::closed;
  ShmLockGuard guard(h_->producer, may_sleep ? deadline_ns : now_ns());
  if (!guard.owns()) return PushStatus::timeout;

  uint64_t head = h_->head.load(std::memory_order_relaxed);
  uint64_t published = head;
  size_t pending = 0;
  const size_t chunk_max = max_chunk();
  const uint64_t mask = cap_ - 1;
  const int64_t stamp = !kMetering ? 0 : stamp_ns ? stamp_ns : now_ns();  // at most one clock read per push

  for (size_t m = 0; m < n; ++m) {
    const OutMessage& msg = msgs[m];
    uint64_t total = 0;
    for (size_t i = 0; i < msg.nparts; ++i) total += msg.parts[i].len;

    if (!may_sleep && total > chunk_max) {
      // A multi-frame message may have to wait for the consumer between
      // frames: leave it to a caller that is allowed to sleep.
      if (published != head) publish(head, pending);
      return PushStatus::timeout;
    }
    size_t part = 0, part_off = 0;
    uint64_t remaining = total;
    bool first = true;
    do {
      const size_t len = size_t(remaining < chunk_max ? remaining : chunk_max);
      const size_t need = frame_bytes(len);
      // Before the first frame the caller's deadline applies; in the middle
      // of a message we must finish it, so we wait without a deadline.
      PushStatus st = wait_space(head, need, first ? deadline_ns : kForever, first ? may_sleep : true,
                                 &published, &pending);
      if (st != PushStatus::ok) {
        if (published != head) publish(head, pending);
        return st;
      }
      char* dst = data_ + (head & mask);
      FrameHeader fh;
      fh.len = uint32_t(len);
      fh.flags =
          (msg.flags & ~kFramingMask) | (first ? kFrameFirst : 0) | (remaining == len ? kFrameLast : 0);
      fh.id = msg.id;
      fh.total = total;
      fh.aux = msg.aux;
      fh.stamp = stamp;
      if (first && remaining > len) {
        h_->producing_id = msg.id;
        h_->producing_total = total;
        h_->producing = 1;
      } else if (remaining == len) {
        h_->producing = 0;
      }
      std::memcpy(dst, &fh, sizeof fh);
      char* p = dst + sizeof fh;
      size_t left = len;
      while (left > 0) {
        const Slice& s = msg.parts[part];
        size_t take = s.len - part_off;
        if (take > left) take = left;
        std::memcpy(p, s.data + part_off, take);
        p += take;
        left -= take;
        part_off += take;
        if (part_off == s.len) {
          ++part;
          part_off = 0;
        }
      }
      while (part < msg.nparts && msg.parts[part].len == 0) ++part;
      head += need;
      remaining -= len;
      if (!first || remaining > 0) {
        // Multi-frame message: publish each frame so the consumer can drain.
        publish(head, remaining == 0 ? 1 : 0);
        published = head;
      }
      first = false;
    } while (remaining > 0);
    if (published != head) ++pending;
    if (written) *written = m + 1;
  }
  if (published != head) publish(head, pending);
  return PushStatus::ok;
}

PushStatus Ring::push(const OutMessage* msgs, size_t n, int64_t deadline_ns, size_t* written, int64_t stamp) {
  return push_impl(msgs, n, deadline_ns, true, written, stamp);
}

PushStatus Ring::try_push(const OutMessage* msgs, size_t n, size_t* written, int64_t stamp) {
  return push_impl(msgs, n, 0, false, written, stamp);
}

// ---------------------------------------------------------------- consumer

bool Ring::wait_data(int64_t deadline_ns, int spin, int yields) {
  for (int i = 0; i < spin; ++i) {
    if (!empty()) return !aborted();
    cpu_relax();
  }
  for (int i = 0; i < yields; ++i) {
    if (!empty()) return !aborted();
    if (now_ns() >= deadline_ns) break;
    sched_yield();
  }
  for (;;) {
    uint32_t s = h_->data_seq.load(std::memory_order_seq_cst);
    if (aborted()) return false;
    if (!empty()) return true;
    if (closed()) return false;
    h_->data_waiters.fetch_add(1, std::memory_order_seq_cst);
    bool ok = futex_wait_until(&h_->data_seq, s, deadline_ns, true);
    h_->data_waiters.fetch_sub(1, std::memory_order_seq_cst);
    if (!empty()) return true;
    if (!ok) return false;
  }
}

void Ring::release_space(uint64_t tail) {
  h_->tail.store(tail, std::memory_order_release);
  h_->space_seq.fetch_add(1, std::memory_order_seq_cst);
  if (h_->space_waiters.load(std::memory_order_seq_cst) != 0) {
    futex_wake(&h_->space_seq, INT_MAX, true);
  }
}

const FrameHeader* Ring::frame_at(uint64_t pos, uint64_t head) const {
  const uint64_t avail = head - pos;
  if (avail < sizeof(FrameHeader) || avail > cap_) throw RingCorrupt("ring positions out of range");
  const auto* fh = reinterpret_cast<const FrameHeader*>(data_ + (pos & (cap_ - 1)));
  if (fh->len > max_chunk() || frame_bytes(fh->len) > avail || fh->len > fh->total ||
      fh->total > kMaxMessageBytes) {
    throw RingCorrupt("frame length out of bounds");
  }
  return fh;
}

size_t Ring::consume_locked(size_t max_msgs, MessageSink& sink) {
  if (aborted()) return 0;
  uint64_t tail = h_->tail.load(std::memory_order_relaxed);
  size_t n = 0;
  while (n < max_msgs) {
    uint64_t head = h_->head.load(std::memory_order_acquire);
    if (head == tail) break;
    const FrameHeader* fh = frame_at(tail, head);
    if (!(fh->flags & kFrameFirst)) {
      // Leftovers of a message whose consumer died mid-way: skip them.
      if (!h_->resync) throw RingCorrupt("frame out of sequence");
      if (fh->flags & (kFrameLast | kFrameAbort)) h_->resync = 0;
      tail += frame_bytes(fh->len);
      release_space(tail);
      continue;
    }
    h_->resync = 0;
    const uint64_t id = fh->id, total = fh->total;
    sink.pushed_at = fh->stamp;
    sink.begin(id, fh->flags & ~kFramingMask, fh->aux, total);
    sink.append(reinterpret_cast<const char*>(fh + 1), fh->len);
    uint64_t got = fh->len;
    bool last = fh->flags & kFrameLast;
    tail += frame_bytes(fh->len);
    while (!last) {
      // Free the frame we read so the producer can write the next one.
      release_space(tail);
      head = h_->head.load(std::memory_order_acquire);
      if (head == tail) {
        if (!wait_data(kForever, 1000)) {  // closed mid-message
          sink.abort();
          return n;
        }
        head = h_->head.load(std::memory_order_acquire);
      }
      fh = frame_at(tail, head);
      if (fh->flags & kFrameAbort) {  // its producer died: drop the message
        tail += frame_bytes(fh->len);
        release_space(tail);
        sink.abort();
        last = false;
        break;
      }
      if ((fh->flags & kFrameFirst) || fh->id != id || got + fh->len > total) {
        throw RingCorrupt("continuation frame does not match its message");
      }
      sink.append(reinterpret_cast<const char*>(fh + 1), fh->len);
      got += fh->len;
      last = fh->flags & kFrameLast;
      tail += frame_bytes(fh->len);
    }
    if (!last) continue;  // aborted
    if (got != total) throw RingCorrupt("message length mismatch");
    sink.end();
    ++n;
  }
  if (n) {
    h_->popped.store(h_->popped.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    release_space(tail);
  }
  return n;
}

size_t Ring::try_consume(size_t max_msgs, MessageSink& sink) {
  ShmLockGuard g(h_->consumer);
  return consume_locked(max_msgs, sink);
}

void Ring::load_raw_for_test(const char* bytes, size_t n) {
  if (n > cap_) n = cap_;
  uint64_t head = h_->head.load(std::memory_order_relaxed);
  const uint64_t room = cap_ - (head - h_->tail.load(std::memory_order_relaxed));
  if (n > room) n = size_t(room);
  std::memcpy(data_ + (head & (cap_ - 1)), bytes, n);  // the mirror mapping handles the wrap
  h_->head.store(head + n, std::memory_order_release);
}

bool Ring::recover_consumer(int32_t dead) {
  if (h_->consumer.owner.load(std::memory_order_relaxed) != dead) return false;
  h_->resync = 1;  // harmless if it was between messages: the next frame is a first one
  return h_->consumer.recover_from(dead);
}

bool Ring::recover_producer(int32_t dead) {
  if (!h_->producer.recover_from(dead)) return false;
  ShmLockGuard g(h_->producer);
  if (h_->producing) {
    uint64_t head = h_->head.load(std::memory_order_relaxed);
    uint64_t published = head;
    size_t pending = 0;
    const size_t need = frame_bytes(0);
    if (wait_space(head, need, kForever, true, &published, &pending) == PushStatus::ok) {
      FrameHeader fh{0, kFrameLast | kFrameAbort, h_->producing_id, h_->producing_total, 0, 0};
      std::memcpy(data_ + (head & (cap_ - 1)), &fh, sizeof fh);
      publish(head + need, 0);
    }
    h_->producing = 0;
  }
  return true;
}

void Ring::abort() {
  h_->closed.store(2, std::memory_order_seq_cst);
  h_->data_seq.fetch_add(1, std::memory_order_seq_cst);
  futex_wake(&h_->data_seq, INT_MAX, true);
  h_->space_seq.fetch_add(1, std::memory_order_seq_cst);
  futex_wake(&h_->space_seq, INT_MAX, true);
}

void Ring::close() {
  uint32_t open = 0;
  h_->closed.compare_exchange_strong(open, 1, std::memory_order_seq_cst);
  h_->data_seq.fetch_add(1, std::memory_order_seq_cst);
  futex_wake(&h_->data_seq, INT_MAX, true);
  h_->space_seq.fetch_add(1, std::memory_order_seq_cst);
  futex_wake(&h_->space_seq, INT_MAX, true);
}

}  // namespace mps
