// quiet_thread.hpp — start an engine thread that never receives signals.
//
// The interpreter handles signals (Ctrl-C) on its main thread; a C++ thread
// that happened to take a SIGINT would hide it from Python.  Engine threads
// are therefore started with every signal blocked.
//
// Invariants: the calling thread's signal mask is restored before return.
// Memory ordering: std::thread's constructor synchronises-with the start of
// the new thread; nothing else is shared here.
#pragma once

#include <pthread.h>
#include <signal.h>

#include <thread>
#include <utility>

namespace mps {

template <class F>
std::thread start_quiet_thread(F&& f) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  std::thread t(std::forward<F>(f));
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return t;
}

}  // namespace mps
