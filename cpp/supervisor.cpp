#include "supervisor.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <system_error>

#include "futex.hpp"

extern char** environ;

namespace mps {

namespace {
int open_pidfd(pid_t pid) {
#ifdef SYS_pidfd_open
  return int(syscall(SYS_pidfd_open, pid, 0));
#else
  errno = ENOSYS;
  return -1;
#endif
}
}  // namespace

Supervisor::Supervisor() {
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  thread_ = std::thread([this] { run(); });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

Supervisor::~Supervisor() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  poke();
  thread_.join();
  // Whatever is still running now has no owner: kill and reap it.
  for (auto& [pid, c] : children_) {
    if (!c.exited) {
      ::kill(pid, SIGKILL);
      int st;
      while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
      }
    }
    if (c.pidfd >= 0) close(c.pidfd);
  }
  close(wake_fd_);
}

void Supervisor::poke() {
  uint64_t one = 1;
  ssize_t r = write(wake_fd_, &one, sizeof one);
  (void)r;
}

std::vector<pid_t> Supervisor::spawn(const std::vector<SpawnSpec>& specs) {
  SpawnJob job;
  job.specs = &specs;
  std::unique_lock<std::mutex> lk(mu_);
  if (stop_) throw std::runtime_error("supervisor is stopping");
  jobs_.push_back(&job);
  lk.unlock();
  poke();
  lk.lock();
  cv_.wait(lk, [&] { return job.done; });
  if (job.error) throw std::system_error(job.error, std::generic_category(), job.what);
  return job.pids;
}

void Supervisor::do_spawn(SpawnJob& job) {
  for (const SpawnSpec& spec : *job.specs) {
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    // Copy every source above all target numbers first: dup2 in order could
    // otherwise overwrite a source that a later action still reads from, and
    // dup2 onto the same number would keep close-on-exec.
    int max_target = 2;
    for (auto [src, dst] : spec.fds) max_target = dst > max_target ? dst : max_target;
    std::vector<int> temps;
    for (auto [src, dst] : spec.fds) {
      int from = fcntl(src, F_DUPFD_CLOEXEC, max_target + 1);
      if (from < 0) {
        job.error = errno;
        job.what = "fcntl(F_DUPFD_CLOEXEC)";
        break;
      }
      temps.push_back(from);
      posix_spawn_file_actions_adddup2(&fa, from, dst);
    }
    if (job.error) {
      for (int t : temps) close(t);
      posix_spawn_file_actions_destroy(&fa);
      posix_spawnattr_destroy(&attr);
      break;
    }
    sigset_t empty, defaults;
    sigemptyset(&empty);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    sigaddset(&defaults, SIGXFSZ);
    posix_spawnattr_setsigmask(&attr, &empty);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

    std::vector<char*> argv;
    for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    std::vector<char*> envp;
    for (const auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    pid_t pid = -1;
    int rc = posix_spawn(&pid, argv[0], &fa, &attr, argv.data(), spec.env.empty() ? environ : envp.data());
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    for (int t : temps) close(t);
    if (rc != 0) {
      job.error = rc;
      job.what = "posix_spawn " + spec.argv[0];
      break;
    }
    Child c;
    c.pidfd = open_pidfd(pid);
    if (c.pidfd < 0) pidfd_ok_ = false;
    children_[pid] = c;
    job.pids.push_back(pid);
    if (!spec.cpus.empty()) {
      cpu_set_t set;
      CPU_ZERO(&set);
      for (int cpu : spec.cpus) {
        if (cpu >= 0 && cpu < CPU_SETSIZE) CPU_SET(cpu, &set);
      }
      if (sched_setaffinity(pid, sizeof set, &set) != 0) {
        job.error = errno;
        job.what = "sched_setaffinity for worker";
        break;
      }
    }
  }
  if (job.error) {
    for (pid_t p : job.pids) ::kill(p, SIGKILL);
  }
}

void Supervisor::reap(pid_t pid) {
  int st = 0;
  pid_t r;
  do {
    r = waitpid(pid, &st, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return;  // still running
  {
    // The hook first: whoever sees the exit (wait_exit, has_exited) may rely
    // on the hook's owner having been told.  Under hook_mu_, so that
    // set_on_exit() (e.g. from a hook owner being destroyed) waits for a
    // call in progress instead of racing it.
    std::lock_guard<std::mutex> hk(hook_mu_);
    if (on_exit_) on_exit_(pid, r < 0 ? -1 : st);
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    Child& c = children_[pid];
    c.exited = true;
    c.status = r < 0 ? -1 : st;  // -1: somebody else reaped it
    if (c.pidfd >= 0) {
      close(c.pidfd);
      c.pidfd = -1;
    }
  }
  cv_.notify_all();
}

void Supervisor::run() {
  std::vector<pollfd> fds;
  std::vector<pid_t> pids;
  for (;;) {
    fds.clear();
    pids.clear();
    bool poll_all = false;
    {
      std::unique_lock<std::mutex> lk(mu_);
      while (!jobs_.empty()) {
        SpawnJob* job = jobs_.front();
        jobs_.pop_front();
        do_spawn(*job);
        job->done = true;
        cv_.notify_all();
      }
      if (stop_) return;
      fds.push_back({wake_fd_, POLLIN, 0});
      for (auto& [pid, c] : children_) {
        if (c.exited) continue;
        if (c.pidfd >= 0) {
          fds.push_back({c.pidfd, POLLIN, 0});
          pids.push_back(pid);
        } else {
          poll_all = true;
          pids.push_back(pid);
        }
      }
    }
    int timeout = (!pidfd_ok_ || poll_all) ? 50 : -1;
    int n = poll(fds.data(), fds.size(), timeout);
    if (n < 0 && errno != EINTR) continue;
    if (fds[0].revents & POLLIN) {
      uint64_t v;
      ssize_t r = read(wake_fd_, &v, sizeof v);
      (void)r;
    }
    // Check every live child that signalled (or all of them without pidfds).
    size_t fi = 1;
    std::vector<pid_t> to_reap;
    {
      std::lock_guard<std::mutex> lk(mu_);
      for (pid_t pid : pids) {
        auto it = children_.find(pid);
        if (it == children_.end() || it->second.exited) continue;
        if (it->second.pidfd >= 0) {
          if (fi < fds.size() && (fds[fi].revents & (POLLIN | POLLHUP | POLLERR))) to_reap.push_back(pid);
          ++fi;
        } else {
          to_reap.push_back(pid);
        }
      }
    }
    for (pid_t pid : to_reap) reap(pid);
  }
}

bool Supervisor::wait_exit(pid_t pid, int64_t deadline_ns, int* status) {
  std::unique_lock<std::mutex> lk(mu_);
  auto it = children_.find(pid);
  if (it == children_.end()) return true;
  for (;;) {
    if (it->second.exited) {
      if (status) *status = it->second.status;
      return true;
    }
    if (deadline_ns == kForever) {
      cv_.wait(lk);
    } else {
      int64_t left = deadline_ns - now_ns();
      if (left <= 0) return false;
      cv_.wait_for(lk, std::chrono::nanoseconds(left));
    }
  }
}

bool Supervisor::has_exited(pid_t pid, int* status) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = children_.find(pid);
  if (it == children_.end()) return true;
  if (it->second.exited && status) *status = it->second.status;
  return it->second.exited;
}

void Supervisor::kill(pid_t pid, int sig) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = children_.find(pid);
  if (it != children_.end() && !it->second.exited) ::kill(pid, sig);
}

void Supervisor::set_on_exit(std::function<void(pid_t, int)> f) {
  std::lock_guard<std::mutex> hk(hook_mu_);
  on_exit_ = std::move(f);
}

}  // namespace mps
