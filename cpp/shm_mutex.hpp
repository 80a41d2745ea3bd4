// shm_mutex.hpp — a mutex that lives in shared memory and works across processes.
//
// Invariants
//   * state: 0 = free, 1 = held, 2 = held and somebody may be sleeping.
//     (Drepper, "Futexes Are Tricky", mutex #3.)  Only the holder moves the
//     state out of {1, 2}; unlock wakes one sleeper only when state was 2, so
//     an uncontended lock/unlock pair makes no syscall.
//   * owner holds the pid of the process that holds the lock (0 when free).
//     It is advisory: the supervisor uses it to recover a lock whose holder
//     died (the structures it guards publish their state with a single
//     release store at the end, so a dead holder leaves them consistent).
//   * The object is trivially constructible in zeroed shared memory.
//
// Memory ordering: lock() acquires (exchange/CAS with acquire), unlock()
// releases (fetch_sub with release): everything written under the lock is
// visible to the next holder, in this or another process.
#pragma once

#include <pthread.h>
#include <unistd.h>
#include <atomic>
#include <cstdint>
#include <type_traits>

#include "futex.hpp"
#include "process_local.hpp"

namespace mps {

struct ShmMutex {
  std::atomic<uint32_t> state{0};
  std::atomic<int32_t> owner{0};

  bool try_lock() {
    uint32_t c = 0;
    if (state.compare_exchange_strong(c, 1, std::memory_order_acquire, std::memory_order_relaxed)) {
      owner.store(self_pid(), std::memory_order_relaxed);
      return true;
    }
    return false;
  }

  // Returns false if the deadline passed before the lock was taken.
  bool lock_until(int64_t deadline_ns) {
    for (int i = 0; i < 100; ++i) {
      if (try_lock()) return true;
      cpu_relax();
    }
    uint32_t c = state.exchange(2, std::memory_order_acquire);
    while (c != 0) {
      if (!futex_wait_until(&state, 2, deadline_ns, /*shared=*/true)) {
        return false;
      }
      c = state.exchange(2, std::memory_order_acquire);
    }
    owner.store(self_pid(), std::memory_order_relaxed);
    return true;
  }

  void lock() { lock_until(kForever); }

  // Frees the lock if process `dead` (which has exited) holds it; returns
  // whether it did.  The owner is recorded just after the lock is taken, so
  // a holder that died in between cannot be recognised (a tiny window).
  bool recover_from(int32_t dead) {
    if (dead == 0 || owner.load(std::memory_order_relaxed) != dead) return false;
    owner.store(0, std::memory_order_relaxed);
    state.store(0, std::memory_order_release);
    futex_wake(&state, INT32_MAX, /*shared=*/true);
    return true;
  }

  void unlock() {
    owner.store(0, std::memory_order_relaxed);
    if (state.fetch_sub(1, std::memory_order_release) != 1) {
      state.store(0, std::memory_order_release);
      futex_wake(&state, 1, /*shared=*/true);
    }
  }
};

static_assert(std::is_standard_layout_v<ShmMutex> && std::is_trivially_destructible_v<ShmMutex>,
              "ShmMutex lives in shared memory");
static_assert(sizeof(ShmMutex) == 8, "state and owner, nothing else: zero bytes are a free lock");
static_assert(std::atomic<uint32_t>::is_always_lock_free && std::atomic<int32_t>::is_always_lock_free,
              "futex words must be lock-free atomics");

// RAII holder; `owns()` tells whether a timed lock succeeded.
class ShmLockGuard {
 public:
  explicit ShmLockGuard(ShmMutex& m, int64_t deadline_ns = kForever)
      : m_(m), owns_(m.lock_until(deadline_ns)) {}
  ~ShmLockGuard() {
    if (owns_) m_.unlock();
  }
  bool owns() const { return owns_; }
  ShmLockGuard(const ShmLockGuard&) = delete;
  ShmLockGuard& operator=(const ShmLockGuard&) = delete;

 private:
  ShmMutex& m_;
  bool owns_;
};

}  // namespace mps
