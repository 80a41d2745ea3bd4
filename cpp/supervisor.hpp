// supervisor.hpp — spawns worker interpreters and notices when they exit.
//
// Workers are plain child processes (posix_spawn of `sys.executable -m
// mpserver._worker.child ...`), not multiprocessing.  All spawning happens on the
// supervisor's own thread, which lives as long as the Supervisor: the kernel
// ties PR_SET_PDEATHSIG to the *thread* that created the child, so spawning
// from a caller's short-lived thread would kill the workers when that thread
// ends.  The same thread watches every child through a pidfd and reaps it.
//
// Invariants
//   * Every spawned pid is reaped exactly once, by the supervisor thread
//     (waitpid on that pid only: other children of the process are left alone).
//   * A child gets: the given fds dup2'ed to the given numbers (everything
//     else is close-on-exec), an empty signal mask, default SIGPIPE/SIGXFSZ,
//     and, if cpus is non-empty, that CPU affinity before it runs Python code.
//   * ~Supervisor kills (SIGKILL) and reaps whatever is still running.
//
// Memory ordering: all shared state (children table, command queue) is under
// one std::mutex; a condition variable announces exits and completed spawns.
// The exit hook has a mutex of its own, held while it runs.
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace mps {

struct SpawnSpec {
  std::vector<std::string> argv;         // argv[0] is the executable path
  std::vector<std::pair<int, int>> fds;  // (fd in this process, fd number in the child)
  std::vector<int> cpus;                 // empty: no pinning
  std::vector<std::string> env;          // "KEY=VALUE"; empty: this process's environment
};

class Supervisor {
 public:
  Supervisor();
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Spawns all specs (on the supervisor thread) and returns their pids in
  // order.  Throws std::system_error if any spawn fails; children already
  // spawned by this call are killed first.
  std::vector<pid_t> spawn(const std::vector<SpawnSpec>& specs);

  // Waits until pid has exited; returns false on timeout.  *status is the raw
  // wait status.
  bool wait_exit(pid_t pid, int64_t deadline_ns, int* status = nullptr);
  bool has_exited(pid_t pid, int* status = nullptr);
  void kill(pid_t pid, int sig);

  // Runs on the supervisor thread after a child was reaped, before the exit
  // is visible to wait_exit() and has_exited(): whoever sees an exit may rely
  // on the hook's owner having been told of it.  Replacing the hook waits for
  // a call in progress, so its owner may be destroyed once
  // set_on_exit(nullptr) returns.  The hook must not call back into the
  // supervisor's spawn().
  void set_on_exit(std::function<void(pid_t, int)> f);

 private:
  struct Child {
    int pidfd = -1;
    bool exited = false;
    int status = 0;
  };
  struct SpawnJob {
    const std::vector<SpawnSpec>* specs;
    std::vector<pid_t> pids;
    int error = 0;
    std::string what;
    bool done = false;
  };

  void run();
  void do_spawn(SpawnJob& job);
  void reap(pid_t pid);
  void poke();

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<pid_t, Child> children_;
  std::deque<SpawnJob*> jobs_;
  std::mutex hook_mu_;  // guards on_exit_ and every call of it
  std::function<void(pid_t, int)> on_exit_;
  int wake_fd_ = -1;
  bool stop_ = false;
  bool pidfd_ok_ = true;
  std::thread thread_;
};

}  // namespace mps
