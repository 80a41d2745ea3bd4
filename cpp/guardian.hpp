// guardian.hpp — heals a running server when a worker dies: a worker
// process that exits (killed, segfault, out of memory, os._exit) or a worker
// thread stopped by an exception it does not survive (SystemExit, ...).
//
// Process workers: the supervisor reaps every worker; the guardian learns of
// each exit (a queue fed from the supervisor's exit hook) and, on its own
// thread:
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
// Thread workers report their own end through thread_stopped(): steps 2 and
// 4 are the same, and the budget decides whether the thread builds a fresh
// worker and goes on (step 3 for a thread).
// The watchdog: the guardian thread also wakes every tick (a quarter of the
// limit, at most 250 ms) while some limit applies, and kills (SIGKILL) a
// live worker process that is stuck; its death then takes the path above,
// and the crash report of its items says why it was killed.  Stuck means:
//   * item_timeout (per servlet): its oldest claim is older than the limit;
//   * the stop grace (stop(grace), the whole server): since the stop began,
//     it has held an item for longer than the grace (counted from the later
//     of the stop and the item's claim), or its input ring is finished (no
//     work left) and it has not exited within the grace (e.g. a non-daemon
//     thread of the user's keeps it alive).  Each such kill is also kept as
//     a line of text (stop_kills(), for inspection); what the embedding logs
//     is the crash event of the death that follows, which says why the
//     worker was killed.  Worker threads
//     are judged by the same rules on request (thread_stuck()): they cannot
//     be killed, so the embedding stops waiting for them instead.
// Each crash, restart, kill and lost servlet is counted in the worker's meter
// record (meter.hpp, the `kept` line, under the guardian's mutex) and
// reported as an event on the control ring for the embedding to log.
// No Python runs here; Python turns crash payloads into WorkerCrashedError.
// What only the embedding can do for messages holding object references
// (release them, re-encode an upstream error for a cross-process output) it
// does through the servlet's MessageRelay.
//
// Invariants
//   * Each exit is handled once, in the order the supervisor reaped them.
//   * A servlet's rings, claim table and relay outlive the guardian (the
//     owner keeps them alive until after the guardian is destroyed).
//   * Restarts of a servlet within any `window` never exceed max_restarts,
//     whatever kind its workers are.
//   * After stop(), no worker is respawned and no new failer starts; claims of
//     workers that die are still failed (rings permitting).  The watchdog
//     keeps watching until the guardian is destroyed (a worker stuck while
//     the server stops is killed the same way).
//   * The watchdog kills a worker at most once per pid (`killed_for` set),
//     and only pids it still records as live.
//   * After stop(), a servlet whose last worker is gone has its input ring
//     aborted: nobody will read it, so producers blocked on it (an ensemble's
//     fan-out, an upstream stage) must not wait forever.
//
// Threading and memory ordering: the servlet table and the event queue are
// guarded by one std::mutex; the guardian holds it only for bookkeeping,
// never across a ring push or a spawn.  Counters read by info() are copied
// under the same mutex.
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
#include "message_buffer.hpp"
#include "meter.hpp"
#include "ring.hpp"
#include "supervisor.hpp"

namespace mps {

enum class WorkerKind { process, thread };

// Done by the embedding for messages whose payload holds object references
// (a thread servlet's input in the main process).  Called on guardian
// threads, never under the guardian's lock.
class MessageRelay {
 public:
  virtual ~MessageRelay() = default;
  // Makes an upstream error message fit for the servlet's output, in place.
  virtual void pass_on(OwnedMessage& m) = 0;
  // Releases what a message nobody will read refers to.
  virtual void drop(const OwnedMessage& m) = 0;
};

struct GuardedServlet {
  std::string label;               // e.g. "ProcessServlet(Square)", used in error messages
  std::vector<std::string> names;  // per worker index, e.g. "Square-process-0"
  WorkerKind kind = WorkerKind::process;
  uint32_t max_restarts = 0;  // 0: never restart
  int64_t window_ns = 0;
  Ring* input = nullptr;
  Ring* output = nullptr;
  Ring* control = nullptr;  // processes only
  ClaimTable* claims = nullptr;
  std::vector<SpawnSpec> specs;   // processes: per worker index
  std::vector<pid_t> pids;        // processes: current pid per worker index, 0 when none
  MessageRelay* relay = nullptr;  // null when the input holds no object references
  int64_t item_timeout_ns = 0;    // processes: kill a worker holding an item longer (0: never)
  MeterBoard* meter = nullptr;    // where crashes and restarts are counted (may be null)
  std::vector<uint32_t> records;  // with meter: the record of each worker index
};

class Guardian {
 public:
  explicit Guardian(Supervisor& sup);
  ~Guardian();
  Guardian(const Guardian&) = delete;
  Guardian& operator=(const Guardian&) = delete;

  // Registers a servlet whose workers are running (ready); returns its number.
  uint32_t add(GuardedServlet s);
  // A thread worker of `servlet` was stopped by `cause` (e.g. "SystemExit(3)")
  // while serving: fails the items it held, counts a crash, and returns true
  // if the thread may build a fresh worker and go on (budget left, server
  // not stopping), false if it must end.  Called by that thread.
  bool thread_stopped(uint32_t servlet, uint32_t index, const std::string& cause);
  // A thread worker that was allowed to restart could not (its fresh
  // worker's __init__ raised): it is gone.
  void thread_lost(uint32_t servlet, uint32_t index);
  // Where lifecycle events go (crashes, restarts, a servlet left without
  // workers, watchdog kills): Control::event messages, "<level>\x1f<text>",
  // pushed without waiting (a full ring drops the event, never blocks the
  // guardian).  Setting it also says that the embedding drains the control
  // ring (so the guardian no longer discards what restarted workers report
  // there).  Before start(); must outlive the guardian.
  void set_events(Ring* control) { events_ = control; }
  // Starts handling exits (including any that happened before).
  void start();
  // The server is stopping: no more respawns or failers.  grace_ns > 0:
  // from now on the watchdog kills workers stuck for longer (see above).
  void stop(int64_t grace_ns = 0);
  // What the stop grace killed, one line per worker.
  std::vector<std::string> stop_kills() const;
  // A worker thread cannot be killed: the server stopping asks, by the same
  // rules as the watchdog's, whether it is stuck; "" if not, else what it did.
  std::string thread_stuck(uint32_t servlet, uint32_t index);
  // Waits until every exit the supervisor has reported so far is handled
  // (its items failed into their output rings); false if the deadline passed.
  // A server stopping calls it before it closes the rings downstream.
  bool wait_idle(int64_t deadline_ns);

  struct Info {
    uint64_t restarts = 0;
    uint64_t crashes = 0;
    std::vector<pid_t> pids;
    bool failed = false;
    uint64_t overdue_kills = 0;  // workers the watchdog killed (item_timeout)
  };
  Info info(uint32_t servlet) const;
  // Whether every servlet has a live worker and none has spent its restart
  // budget (what the HTTP front's /readyz reports).  False once stopping.
  bool serving() const;

  // The crash payload: fields separated by '\x1f' (unit separator): kind
  // ("process", "thread", or "servlet" when no single worker is to blame),
  // servlet label, worker name, worker index, pid, wait status, note.
  static std::string crash_payload(const char* kind, const GuardedServlet& s, uint32_t index, pid_t pid,
                                   int status, const std::string& note);

 private:
  // One servlet the guardian keeps alive: its workers, restart budget and counts.
  struct Ward {
    GuardedServlet s;
    std::deque<int64_t> restart_times;
    uint64_t restarts = 0;
    uint64_t crashes = 0;
    uint32_t live = 0;
    bool failed = false;
    uint64_t overdue_kills = 0;
    // Per worker index: why the watchdog killed its current pid ("" if it did
    // not), and since when its input ring was seen finished while it lived.
    std::vector<std::string> killed_for;
    std::vector<int64_t> idle_since;
    std::thread failer;
  };

  void run();
  // The watchdog's round: kills stuck workers; returns when the next round is due (0: none).
  int64_t watch();
  enum class Stuck { no, item_timeout, busy_at_stop, lingering_at_stop };
  // Whether worker i of `e` is stuck now; keeps *next the earliest round its
  // limits need (under mu_).
  Stuck stuck_locked(Ward& e, uint32_t i, int64_t now, int64_t* next);
  // What a worker stuck for `why` did, for crash reports and warnings (under mu_).
  std::string stuck_reason(const Ward& e, Stuck why) const;
  void handle(pid_t pid, int status);
  // Fails what worker `index` held; returns how many items that was.
  size_t fail_claims(Ward& e, uint32_t index, const std::string& payload);
  // The meter record of worker `index`, or null.
  static MeterRecord* record_of(const Ward& e, uint32_t index);
  // Reports a lifecycle event (never under mu_).
  void event(const char* level, const std::string& text);
  // Counts a crash; true if the servlet may restart a worker now (under mu_).
  bool spend_restart_locked(Ward& e);
  // A worker is gone for good: starts the failer if it was the last (under mu_;
  // returns whether the caller must start it, outside the lock).
  bool lose_worker_locked(Ward& e);
  void start_failer(Ward* e);
  void run_failer(Ward* e);

  Supervisor& sup_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Ward>> entries_;
  std::deque<std::pair<pid_t, int>> exits_;
  bool started_ = false;
  bool stopping_ = false;
  int64_t stop_started_ = 0, stop_grace_ns_ = 0;  // the stop grace (0: none)
  bool rewatch_ = false;                          // the watchdog's limits changed
  bool handling_ = false;                         // run() is in handle()
  std::condition_variable idle_cv_;               // exits_ emptied and handled
  std::vector<std::string> stop_kills_;
  bool quit_ = false;
  Ring* events_ = nullptr;
  std::thread thread_;
};

}  // namespace mps
