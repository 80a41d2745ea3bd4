// futex.hpp — blocking on a 32-bit word, shared between processes or private.
//
// Invariants
//   * A waiter passes the value it last observed; the kernel puts it to sleep
//     only if the word still holds that value, so a wake that happened after
//     the observation is never lost (the classic futex handshake).
//   * Deadlines are absolute CLOCK_MONOTONIC nanoseconds; kForever means none.
//     FUTEX_WAIT_BITSET takes an absolute monotonic timeout, so a wait that is
//     interrupted and retried never extends the deadline.
//   * `shared` selects the non-private futex, required when the word lives in
//     a mapping that several processes share (rings, shm mutexes).  Private
//     futexes are cheaper and used for words that live in one process only.
//
// Memory ordering: these wrappers do not order memory themselves.  Callers
// publish data with release stores / seq_cst RMWs before waking and load with
// acquire after waking; see ring.hpp and ledger.hpp for the pairings.
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <ctime>

namespace mps {

inline constexpr int64_t kForever = INT64_MAX;

inline int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

// Converts a relative timeout in seconds (negative or NaN → 0; huge → forever).
inline int64_t deadline_after(double seconds) {
  if (!(seconds > 0)) return now_ns();
  if (seconds > 1e9) return kForever;
  return now_ns() + int64_t(seconds * 1e9);
}

static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t), "futex words must be plain 32-bit integers");

// Sleeps while *word == expected, until woken or the deadline passes.
// Returns false only when the deadline has passed; spurious wake-ups and
// value changes return true (callers re-check their condition).
inline bool futex_wait_until(std::atomic<uint32_t>* word, uint32_t expected, int64_t deadline_ns,
                             bool shared) {
  int op = FUTEX_WAIT_BITSET | (shared ? 0 : FUTEX_PRIVATE_FLAG);
  timespec ts;
  timespec* tsp = nullptr;
  if (deadline_ns != kForever) {
    if (now_ns() >= deadline_ns) return false;
    ts.tv_sec = deadline_ns / 1000000000LL;
    ts.tv_nsec = deadline_ns % 1000000000LL;
    tsp = &ts;
  }
  long rc = syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), op, expected, tsp, nullptr,
                    FUTEX_BITSET_MATCH_ANY);
  if (rc == -1 && errno == ETIMEDOUT) return false;
  return true;
}

inline void futex_wake(std::atomic<uint32_t>* word, int count, bool shared) {
  int op = FUTEX_WAKE | (shared ? 0 : FUTEX_PRIVATE_FLAG);
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), op, count, nullptr, nullptr, 0);
}

// One step of a bounded busy-wait: cheap on the sibling hyper-thread.
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

}  // namespace mps
