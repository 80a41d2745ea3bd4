// process_local.hpp — objects that belong to the process that made them.
//
// fork() copies a process's memory but only the forking thread.  In a forked
// child, an engine object inherited from the parent is a trap: its threads do
// not exist there (joining one waits forever), its condition variables and
// mutexes may hold the parent's waiters (destroying one can block forever),
// and the rings and claim tables it reaches are the parent's own shared
// memory (closing or writing them breaks the parent's server, and a request
// sent from the child could be answered into the parent's request slots).
//
// So an object that owns threads, condition variables or the right to close
// shared rings is held through ProcessLocal<T>: a unique_ptr whose deleter
// remembers the process that created it.  In that process it deletes as
// usual; in any other (a forked child) it leaks the object — the child's copy
// of the memory goes away with the child, and nothing the parent shares is
// touched.  Bindings refuse to *use* such an object in another process
// (owned_here()), with a clear error, before they reach it.
//
// Invariants
//   * self_pid() is this process's pid, also right after fork() in the child
//     (the pthread_atfork child handler clears the cache before any code of
//     the child runs).
//   * A ProcessLocal made in process P deletes its object only in P.
//
// Memory ordering: the cached pid is relaxed; it is written by the process's
// own threads only (a child starts with one thread, the forking one).
#pragma once

#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <utility>

namespace mps {

// getpid() is a system call on current glibc; hot paths compare pids, so it
// is cached (and refreshed in a forked child).
inline int32_t self_pid() {
  static std::atomic<int32_t> pid{0};
  int32_t p = pid.load(std::memory_order_relaxed);
  if (p == 0) {
    static const bool hooked = [] {
      pthread_atfork(nullptr, nullptr, [] { pid.store(0, std::memory_order_relaxed); });
      return true;
    }();
    (void)hooked;
    p = int32_t(getpid());
    pid.store(p, std::memory_order_relaxed);
  }
  return p;
}

template <class T>
struct DeleteInOwnerProcess {
  int32_t owner = self_pid();
  void operator()(T* p) const noexcept {
    if (self_pid() == owner) delete p;  // elsewhere: leaked on purpose (see the top of this file)
  }
};

template <class T>
using ProcessLocal = std::unique_ptr<T, DeleteInOwnerProcess<T>>;

template <class T, class... Args>
ProcessLocal<T> make_process_local(Args&&... args) {
  return ProcessLocal<T>(new T(std::forward<Args>(args)...));
}

// True in the process that made `p` (false in a forked child).
template <class T>
bool owned_here(const ProcessLocal<T>& p) {
  return p.get_deleter().owner == self_pid();
}

}  // namespace mps
