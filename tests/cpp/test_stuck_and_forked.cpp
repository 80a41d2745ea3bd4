// Catch2 tests of what keeps a server from being wrong or stuck: claim
// times and the guardian's watchdog (item_timeout), and process-local
// ownership of engine objects across fork() (cpp/process_local.hpp).
#include <catch2/catch.hpp>

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "cancel_board.hpp"
#include "claims.hpp"
#include "futex.hpp"
#include "guardian.hpp"
#include "ledger.hpp"
#include "message_buffer.hpp"
#include "process_local.hpp"
#include "ring.hpp"
#include "supervisor.hpp"
#include "wire.hpp"

using namespace mps;

TEST_CASE("claims: oldest_since is when the oldest held item was taken; 0 when none is held") {
  auto t = ClaimTable::create(2, 8);
  CHECK(t->oldest_since(0) == 0);
  const int64_t before = now_ns();
  REQUIRE(t->claim(0, 1, 0));
  const int64_t first = t->oldest_since(0);
  CHECK((first >= before && first <= now_ns()));
  REQUIRE(t->claim(0, 2, 0));
  CHECK(t->oldest_since(0) == first);  // the older claim wins
  t->release(0, 1);
  CHECK(t->oldest_since(0) >= first);  // now item 2's
  t->release(0, 2);
  CHECK(t->oldest_since(0) == 0);
  CHECK(t->oldest_since(1) == 0);  // sections are separate
}

// Two worker processes that never answer (/bin/sleep), guarded as
// ProcessServlet(P) over `in`, `out` and `claims`.
struct Sleepers {
  Supervisor sup;
  std::unique_ptr<Ring> in = Ring::create(64 * 1024, "w-in"), out = Ring::create(64 * 1024, "w-out");
  std::unique_ptr<ClaimTable> claims = ClaimTable::create(2, 64);
  SpawnSpec spec{{"/bin/sleep", "60"}, {}, {}, {}};
  std::vector<pid_t> pids = sup.spawn({spec, spec});

  GuardedServlet servlet(uint32_t max_restarts) {
    GuardedServlet s;
    s.label = "ProcessServlet(P)";
    s.names = {"P-process-0", "P-process-1"};
    s.kind = WorkerKind::process;
    s.max_restarts = max_restarts;
    s.window_ns = 60'000'000'000LL;
    s.input = in.get();
    s.output = out.get();
    s.claims = claims.get();
    s.specs = {spec, spec};
    s.pids = pids;
    return s;
  }
};

TEST_CASE("guardian: the watchdog kills a worker holding an item beyond item_timeout and fails just that") {
  Sleepers w;  // one will hold an item, the other nothing
  auto& [sup, in, out, claims, spec, pids] = w;
  REQUIRE(pids.size() == 2);
  Guardian g(sup);
  GuardedServlet s = w.servlet(0);
  s.item_timeout_ns = 200'000'000;  // 0.2 s
  const uint32_t id = g.add(std::move(s));
  REQUIRE(claims->claim(0, 77, 5));  // worker 0 took item 77 (as its gather would)
  g.start();
  BufferSink sink;
  const int64_t deadline = now_ns() + 20'000'000'000LL;
  while (sink.msgs.empty() && now_ns() < deadline) {
    if (out->wait_data(now_ns() + 100'000'000)) (void)out->try_consume(SIZE_MAX, sink);
  }
  REQUIRE(sink.msgs.size() == 1);
  const OwnedMessage& m = sink.msgs[0];
  CHECK((m.id == 77 && m.aux == 5 && m.flags == (kFlagError | kFlagCrash)));
  CHECK(m.payload.find("item_timeout of 0.2 seconds") != std::string::npos);
  int st = 0;
  REQUIRE(sup.wait_exit(pids[0], now_ns() + 5'000'000'000LL, &st));
  CHECK((WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL));
  CHECK_FALSE(sup.has_exited(pids[1], &st));         // it held nothing: left alone
  REQUIRE(g.wait_idle(now_ns() + 5'000'000'000LL));  // its exit fully handled
  CHECK(g.info(id).overdue_kills == 1);
  CHECK(g.info(id).crashes == 1);
  sup.kill(pids[1], SIGKILL);
  REQUIRE(sup.wait_exit(pids[1], now_ns() + 5'000'000'000LL, &st));
  in->close();
}

TEST_CASE("guardian: after stop(grace), a worker busy or lingering beyond the grace is killed and reported") {
  Sleepers w;
  auto& [sup, in, out, claims, spec, pids] = w;
  Guardian g(sup);
  (void)g.add(w.servlet(5));
  REQUIRE(claims->claim(0, 88, 1));  // worker 0 is busy; worker 1 has nothing to do
  g.start();
  in->close();  // the server is stopping: no work left for worker 1
  g.stop(200'000'000);
  int st = 0;
  REQUIRE(sup.wait_exit(pids[0], now_ns() + 20'000'000'000LL, &st));
  REQUIRE(sup.wait_exit(pids[1], now_ns() + 20'000'000'000LL, &st));
  REQUIRE(g.wait_idle(now_ns() + 5'000'000'000LL));
  BufferSink sink;
  REQUIRE(out->try_consume(SIZE_MAX, sink) == 1);
  CHECK(sink.msgs[0].id == 88);
  CHECK(sink.msgs[0].payload.find("after the server began to stop (stop_grace)") != std::string::npos);
  auto kills = g.stop_kills();
  REQUIRE(kills.size() == 2);
  std::sort(kills.begin(), kills.end());
  CHECK(kills[0].find("P-process-0") != std::string::npos);
  CHECK(kills[1].find("P-process-1") != std::string::npos);
  CHECK(kills[1].find("had no work left but did not exit within 0.2 seconds") != std::string::npos);
  CHECK(in->aborted());  // nobody is left to read it
}

TEST_CASE("cancel board: the ledger posts an abandoned request; a later request in its slot is not on it") {
  auto board = CancelBoard::create(4);
  Ledger ledger(1);
  ledger.set_board(board.get());
  uint32_t idx = 0;
  REQUIRE(ledger.acquire(false, 0, &idx) == Status::ok);
  const uint64_t first = ledger.token(idx);
  CHECK_FALSE(board->take_if_abandoned(first));
  REQUIRE(ledger.abandon(
      idx, mps::Ledger::GiveUp::timed_out));          // the caller gives up while the request is pending
  auto seen = CancelBoard::attach(dup(board->fd()));  // as a worker process maps it
  CHECK(seen->take_if_abandoned(first));
  CHECK(board->dropped() == 1);
  ledger.discard(idx);  // (its result arrived and was dropped)
  REQUIRE(ledger.acquire(false, 0, &idx) == Status::ok);
  CHECK(ledger.token(idx) != first);
  CHECK_FALSE(seen->take_if_abandoned(ledger.token(idx)));  // same slot, another request
  CHECK_FALSE(seen->take_if_abandoned(uint64_t(7)));        // a slot beyond the board
}

namespace {
struct Probe {
  std::atomic<int>* destroyed;
  ~Probe() { destroyed->fetch_add(1); }
};
}  // namespace

TEST_CASE("process_local: deleted in the process that made it, leaked in a forked child") {
  void* mem =
      mmap(nullptr, sizeof(std::atomic<int>), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  REQUIRE(mem != MAP_FAILED);
  auto* destroyed = new (mem) std::atomic<int>(0);
  auto p = make_process_local<Probe>(destroyed);
  REQUIRE(owned_here(p));
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    const bool foreign = !owned_here(p);
    const int32_t seen = self_pid();
    p.reset();  // must leak: the parent still owns the object
    _exit(foreign && seen == int32_t(getpid()) && destroyed->load() == 0 ? 0 : 1);
  }
  int st = 0;
  REQUIRE(waitpid(child, &st, 0) == child);
  CHECK((WIFEXITED(st) && WEXITSTATUS(st) == 0));
  CHECK(destroyed->load() == 0);
  p.reset();
  CHECK(destroyed->load() == 1);
  munmap(mem, sizeof(std::atomic<int>));
}
