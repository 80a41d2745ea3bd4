// guardian.hpp — heals a running server when a worker process dies.
//
// The supervisor reaps every worker; the guardian learns of each exit (a
// queue fed from the supervisor's exit hook) and, on its own thread:
//   1. frees the ring locks the dead process held (its input ring's consumer
//      lock, its output and control rings' producer locks), ending a message
//      it left half-written;
//   2. fails every item the worker held (its claims, see claims.hpp) by
//      pushing an error result — kFlagError | kFlagCrash, payload describing
//      the crash — into the worker's output ring, where it travels on like
//      any result (through later stages, ensemble joins, to the caller);
//   3. respawns the worker from its original spawn spec, unless the server is
//      stopping (its input ring is closed) or the servlet's restart budget
//      (max_restarts within window) is spent;
//   4. when a servlet has no live worker left and will get none, starts a
//      failer thread that answers every item reaching that servlet with an
//      error result at once, so nothing queues forever.
// No Python runs here; Python turns crash payloads into WorkerCrashedError.
//
// Invariants
//   * Each exit is handled once, in the order the supervisor reaped them.
//   * A servlet's rings and claim table outlive the guardian (the owner keeps
//     them alive until after the guardian is destroyed).
//   * Restarts of a servlet within any `window` never exceed max_restarts.
//   * After stop(), no worker is respawned and no new failer starts; claims of
//     workers that die are still failed (rings permitting).
//
// Threading and memory ordering: the servlet table and the event queue are
// guarded by one std::mutex; the guardian thread holds it only for
// bookkeeping, never across a ring push or a spawn.  Counters read by info()
// are copied under the same mutex.
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "claims.hpp"
#include "ring.hpp"
#include "supervisor.hpp"

namespace mps {

struct GuardedServlet {
  std::string label;        // e.g. "ProcessServlet(Square)", used in error messages
  std::vector<std::string> names;  // per worker index, e.g. "Square-process-0"
  uint32_t max_restarts = 0;       // 0: never restart
  int64_t window_ns = 0;
  Ring* input = nullptr;
  Ring* output = nullptr;
  Ring* control = nullptr;
  ClaimTable* claims = nullptr;
  std::vector<SpawnSpec> specs;    // per worker index
  std::vector<pid_t> pids;         // current pid per worker index, 0 when none
};

class Guardian {
 public:
  explicit Guardian(Supervisor& sup);
  ~Guardian();
  Guardian(const Guardian&) = delete;
  Guardian& operator=(const Guardian&) = delete;

  // Registers a servlet whose workers are running (ready); returns its number.
  uint32_t add(GuardedServlet s);
  // Starts handling exits (including any that happened before).
  void start();
  // The server is stopping: no more respawns or failers.
  void stop();

  struct Info {
    uint64_t restarts = 0;
    uint64_t crashes = 0;
    std::vector<pid_t> pids;
    bool failed = false;
  };
  Info info(uint32_t servlet) const;

  // The crash payload: fields separated by '\x1f' (unit separator):
  // label, worker name, worker index, pid, wait status, note.
  static std::string crash_payload(const GuardedServlet& s, uint32_t index, pid_t pid, int status,
                                   const std::string& note);

 private:
  struct Entry {
    GuardedServlet s;
    std::deque<int64_t> restart_times;
    uint64_t restarts = 0;
    uint64_t crashes = 0;
    uint32_t live = 0;
    bool failed = false;
    std::thread failer;
  };

  void run();
  void handle(pid_t pid, int status);
  void fail_claims(Entry& e, uint32_t index, pid_t pid, int status);
  void run_failer(Entry* e);

  Supervisor& sup_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Entry>> entries_;
  std::deque<std::pair<pid_t, int>> exits_;
  bool started_ = false;
  bool stopping_ = false;
  bool quit_ = false;
  std::thread thread_;
};

}  // namespace mps
