// Unit and stress tests of the engine (Catch2), built plain, with ASan+UBSan
// and with TSan by tests/cpp/CMakeLists.txt (which the suite runs via CTest).
//
// Catch2's assertion macros are not thread-safe, so code running on helper
// threads (or in forked children) checks with ENSURE, which prints what
// failed and aborts the run; the test body's own checks use REQUIRE.
#include <poll.h>
#include <catch2/catch.hpp>  // the runner is in catch_main.cpp

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "batcher.hpp"
#include "claims.hpp"
#include "collector.hpp"
#include "completion_queue.hpp"
#include "ensemble_router.hpp"
#include "exit_text.hpp"
#include "guardian.hpp"
#include "ledger.hpp"
#include "oob_message.hpp"
#include "ring.hpp"
#include "stream_window.hpp"
#include "supervisor.hpp"
#include "wire.hpp"

using namespace mps;

#define ENSURE(cond)                                                                 \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "%s:%d: ENSURE failed: %s\n", __FILE__, __LINE__, #cond); \
      std::_Exit(1);                                                                 \
    }                                                                                \
  } while (0)

namespace {

std::string payload_for(uint64_t id, size_t len) {
  std::string s(len, '\0');
  for (size_t i = 0; i < len; ++i) s[i] = char((id * 31 + i) & 0xff);
  return s;
}

struct VerifySink : MessageSink {
  std::vector<uint64_t> ids;
  std::string cur;
  uint64_t cur_id = 0;
  void begin(uint64_t id, uint32_t, uint64_t, uint64_t total) override {
    cur_id = id;
    cur.clear();
    cur.reserve(total);
  }
  void append(const char* d, size_t n) override { cur.append(d, n); }
  void end() override {
    ENSURE(cur == payload_for(cur_id, cur.size()));
    ids.push_back(cur_id);
  }
};

// Several producers and consumers; message sizes from 0 bytes to several
// times the ring: every message arrives once, intact, and per-producer order
// is kept for each consumer.
void test_ring_mpmc() {
  auto ring = Ring::create(64 * 1024, "test");
  const int producers = 3, consumers = 3, per = 3000;
  std::atomic<int> received{0};
  std::vector<std::thread> ts;
  for (int p = 0; p < producers; ++p) {
    ts.emplace_back([&, p] {
      for (int i = 0; i < per; ++i) {
        uint64_t id = (uint64_t(p) << 32) | uint64_t(i);
        size_t len = (i % 97 == 0) ? 200000 + i : size_t(i % 300);
        std::string s = payload_for(id, len);
        Slice sl{s.data(), s.size()};
        OutMessage m{id, 0x100, 7, &sl, 1};
        ENSURE(ring->push(&m, 1, kForever) == PushStatus::ok);
      }
    });
  }
  std::vector<VerifySink> sinks(consumers);
  for (int c = 0; c < consumers; ++c) {
    ts.emplace_back([&, c] {
      BatchPolicy pol;
      pol.max_items = size_t(1 + c * 8);
      pol.wait_ns = c == 2 ? 100000 : 0;
      for (;;) {
        size_t n = gather(*ring, sinks[c], pol, kForever);
        if (n == 0) break;
        received += int(n);
      }
    });
  }
  for (int p = 0; p < producers; ++p) ts[size_t(p)].join();
  while (received.load() < producers * per) std::this_thread::yield();
  ring->close();
  for (size_t i = size_t(producers); i < ts.size(); ++i) ts[i].join();
  std::vector<int> seen(size_t(producers * per), 0);
  for (auto& s : sinks) {
    std::vector<int64_t> last(size_t(producers), -1);
    for (uint64_t id : s.ids) {
      int p = int(id >> 32), i = int(id & 0xffffffff);
      ENSURE(i > last[size_t(p)]);  // FIFO per producer as seen by one consumer
      last[size_t(p)] = i;
      seen[size_t(p * per + i)]++;
    }
  }
  for (int v : seen) ENSURE(v == 1);
  std::puts("ring mpmc: ok");
}

// The server's shape: callers submit through a stream window, "workers"
// echo from the entry ring to the output ring, the collector completes
// ledger slots.  Results come back in order, the ledger ends empty.
void test_window_collector() {
  auto entry = Ring::create(64 * 1024, "entry");
  auto output = Ring::create(64 * 1024, "output");
  Ledger ledger(64);
  Collector collector(*output, ledger);
  collector.start();
  std::vector<std::thread> workers;
  for (int w = 0; w < 2; ++w) {
    workers.emplace_back([&] {
      struct Echo : MessageSink {
        Ring* out;
        uint64_t id = 0;
        std::string buf;
        void begin(uint64_t i, uint32_t, uint64_t, uint64_t) override {
          id = i;
          buf.clear();
        }
        void append(const char* d, size_t n) override { buf.append(d, n); }
        void end() override {
          Slice sl{buf.data(), buf.size()};
          OutMessage m{id, 0, 0, &sl, 1};
          ENSURE(out->push(&m, 1, kForever) == PushStatus::ok);
        }
      } echo;
      echo.out = output.get();
      BatchPolicy pol;
      while (gather(*entry, echo, pol, kForever) != 0) {
      }
    });
  }
  const int total = 20000;
  {
    StreamWindow win(ledger, *entry, kForever);
    std::thread feeder([&] {
      for (int i = 0; i < total; ++i) {
        std::string s = std::to_string(i);
        Slice sl{s.data(), s.size()};
        OutMessage m{0, 0, 0, &sl, 1};
        Status st;
        ENSURE(win.submit(&m, 1, true, kForever, &st) == 1);
      }
      win.finish();
    });
    int next = 0;
    std::vector<StreamWindow::Drained> out;
    for (;;) {
      out.clear();
      if (win.drain(64, 0, kForever, out) == 0) break;
      for (auto& d : out) {
        ENSURE(d.outcome == Outcome::ready);
        ENSURE(ledger.take(d.slot, [](Ledger::Result& r) { return r.payload; }) == std::to_string(next));
        ++next;
      }
    }
    feeder.join();
    ENSURE(next == total);
  }
  // Early exit: abandon a window with requests in flight.
  {
    StreamWindow win(ledger, *entry, kForever);
    for (int i = 0; i < 50; ++i) {
      std::string s = "x";
      Slice sl{s.data(), 1};
      OutMessage m{0, 0, 0, &sl, 1};
      Status st;
      ENSURE(win.submit(&m, 1, true, kForever, &st) == 1);
    }
    win.close();
  }
  int64_t deadline = now_ns() + 5000000000LL;
  while (ledger.backlog() != 0 && now_ns() < deadline) std::this_thread::yield();
  ENSURE(ledger.backlog() == 0);
  entry->close();
  for (auto& t : workers) t.join();
  output->close();
  collector.join();
  std::puts("window + collector: ok");
}

// Timed waits return in time and report timeouts.
void test_timeouts() {
  auto ring = Ring::create(64 * 1024, "t");
  int64_t t0 = now_ns();
  ENSURE(!ring->wait_data(now_ns() + 20000000, 0));
  ENSURE(now_ns() - t0 >= 20000000);
  Ledger ledger(1);
  uint32_t idx;
  ENSURE(ledger.acquire(false, 0, &idx) == Status::ok);
  uint32_t idx2;
  ENSURE(ledger.acquire(false, 0, &idx2) == Status::backlog_full);
  ENSURE(ledger.acquire(true, now_ns() + 10000000, &idx2) == Status::backlog_timeout);
  ENSURE(!ledger.wait(idx, now_ns() + 10000000, 0));
  ENSURE(ledger.abandon(idx, mps::Ledger::GiveUp::cancelled));
  std::puts("timeouts: ok");
}

}  // namespace

// Parses a composite payload back into (part flags, part bytes, finished).
struct Composite {
  std::vector<uint32_t> flags;
  std::vector<std::string> parts;
  uint32_t finished = 0;
};

Composite parse_composite(const std::string& s) {
  Composite c;
  auto u32 = [&](size_t off) {
    uint32_t v;
    std::memcpy(&v, s.data() + off, 4);
    return v;
  };
  ENSURE(s.size() >= 16 && u32(0) == kCompositeMagic);
  uint32_t n = u32(4);
  c.finished = u32(8);
  size_t off = 16;
  for (uint32_t i = 0; i < n; ++i) {
    ENSURE(off + 16 <= s.size());
    uint64_t len;
    std::memcpy(&len, s.data() + off + 8, 8);
    c.flags.push_back(u32(off));
    off += 16;
    ENSURE(off + len <= s.size());
    c.parts.emplace_back(s.data() + off, len);
    off += (len + 7) & ~size_t(7);
  }
  ENSURE(off == s.size());
  return c;
}

// An ensemble of three "members" (threads echoing their input with a member
// tag, out of order, one failing on some ids): every input comes out once as
// a composite with parts in member order; with fail_fast an error composite
// is emitted at the first error and late parts are dropped; upstream errors
// bypass the members.
void test_ensemble_router(bool fail_fast) {
  auto in = Ring::create(64 * 1024, "in"), join = Ring::create(64 * 1024, "join"),
       out = Ring::create(64 * 1024, "out");
  std::vector<std::unique_ptr<Ring>> members;
  for (int i = 0; i < 3; ++i) members.push_back(Ring::create(64 * 1024, "m"));
  std::vector<Ring*> raw{members[0].get(), members[1].get(), members[2].get()};
  EnsembleRouter router(*in, raw, *join, *out, fail_fast);
  router.start();
  const int n = 2000;
  std::vector<std::thread> ts;
  for (int m = 0; m < 3; ++m) {
    ts.emplace_back([&, m] {
      BufferSink sink;
      for (;;) {
        if (!members[m]->wait_data(kForever, 0)) {
          if (members[m]->finished()) return;
          continue;
        }
        sink.msgs.clear();
        members[m]->try_consume(m + 1, sink);  // different chunking per member
        for (auto& msg : sink.msgs) {
          uint64_t x = std::stoull(msg.payload);
          bool fail = (m == 2 && x % 7 == 0);
          std::string reply = std::to_string(x * 10 + m);
          Slice sl{reply.data(), reply.size()};
          OutMessage om{msg.id, fail ? kFlagError : 0u, 0, &sl, 1};
          ENSURE(join->push(&om, 1, kForever) == PushStatus::ok);
        }
      }
    });
  }
  std::thread producer([&] {
    for (int i = 0; i < n; ++i) {
      std::string p = std::to_string(i);
      Slice sl{p.data(), p.size()};
      uint32_t flags = (i % 100 == 99) ? kFlagError : 0u;  // upstream error
      OutMessage om{uint64_t(i), flags, uint64_t(i) * 3, &sl, 1};
      ENSURE(in->push(&om, 1, kForever) == PushStatus::ok);
    }
    in->close();
  });
  std::vector<int> seen(n, 0);
  BufferSink sink;
  int got = 0;
  while (got < n) {
    ENSURE(out->wait_data(now_ns() + 30'000'000'000LL, 0));
    sink.msgs.clear();
    out->try_consume(SIZE_MAX, sink);
    for (auto& msg : sink.msgs) {
      ENSURE(msg.id < uint64_t(n));
      seen[msg.id] += 1;
      ++got;
      if (msg.id % 100 == 99) {  // passed through untouched
        ENSURE(msg.flags == kFlagError && msg.payload == std::to_string(msg.id) && msg.aux == msg.id * 3);
        continue;
      }
      ENSURE(msg.aux == msg.id * 3);
      ENSURE(msg.flags & kFlagEnsemble);
      Composite c = parse_composite(msg.payload);
      ENSURE(c.parts.size() == 3);
      const bool member2_fails = msg.id % 7 == 0;
      ENSURE(bool(msg.flags & kFlagError) == (member2_fails && fail_fast));
      for (uint32_t m = 0; m < 3; ++m) {
        if (c.flags[m] == kPartMissing) {
          ENSURE(fail_fast && member2_fails && m != 2);
          continue;
        }
        ENSURE(c.parts[m] == std::to_string(msg.id * 10 + m));
        ENSURE(bool(c.flags[m] & kFlagError) == (m == 2 && member2_fails));
      }
      if (!fail_fast) ENSURE(c.finished == 3);
    }
  }
  producer.join();
  router.join_fanout();
  for (auto& m : members) m->close();
  for (auto& t : ts) t.join();
  join->close();
  router.join_fanin();
  for (int i = 0; i < n; ++i) ENSURE(seen[i] == 1);
  ENSURE(router.open_entries() == 0);
  std::printf("ensemble router (fail_fast=%d): ok\n", int(fail_fast));
}

// One producer publishing batches, one consumer draining on eventfd
// readiness: every token arrives exactly once, even when the queue overflows.
void test_completion_queue() {
  CompletionQueue q(8);  // tiny: forces the overflow path
  const uint64_t n = 20000;
  std::thread producer([&] {
    std::vector<uint64_t> batch;
    for (uint64_t i = 0; i < n; ++i) {
      batch.push_back(i);
      if (batch.size() == 13 || i + 1 == n) {
        q.publish(batch);
        batch.clear();
      }
    }
  });
  std::vector<int> seen(n, 0);
  uint64_t got = 0;
  std::vector<uint64_t> out;
  while (got < n) {
    pollfd p{q.fd(), POLLIN, 0};
    ENSURE(poll(&p, 1, 30000) == 1);
    out.clear();
    q.drain(out);
    for (uint64_t t : out) {
      ENSURE(t < n);
      seen[t] += 1;
      ++got;
    }
  }
  producer.join();
  for (uint64_t i = 0; i < n; ++i) ENSURE(seen[i] == 1);
  std::printf("completion queue: ok\n");
}

// Claims: what a worker holds; take() returns exactly the unreleased ones.
void test_claims() {
  auto t = ClaimTable::create(2, 4);
  ENSURE(t->claim(0, 10, 1) && t->claim(0, 11, 2) && t->claim(0, 12, 3) && t->claim(1, 20, 4));
  t->release(0, 11);
  ENSURE(t->claim(0, 13, 5) && t->claim(0, 14, 6));
  ENSURE(!t->claim(0, 15, 7));  // section full
  ENSURE(t->held(0) == 4 && t->held(1) == 1);
  auto held = t->take(0);
  std::vector<uint64_t> ids;
  for (auto [id, aux] : held) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  ENSURE((ids == std::vector<uint64_t>{10, 12, 13, 14}));
  ENSURE(t->held(0) == 0 && t->take(0).empty());
  auto again = ClaimTable::attach(dup(t->fd()));
  ENSURE(again->take(1).size() == 1 && t->held(1) == 0);
  std::printf("claims: ok\n");
}

struct Recording : MessageSink {
  std::vector<std::pair<uint64_t, std::string>> done;
  std::string cur;
  uint64_t cur_id = 0;
  int aborted = 0;
  void begin(uint64_t id, uint32_t, uint64_t, uint64_t) override {
    cur_id = id;
    cur.clear();
  }
  void append(const char* d, size_t n) override { cur.append(d, n); }
  void end() override { done.emplace_back(cur_id, cur); }
  void abort() override { ++aborted; }
};

// Consumes from `ring` until a message with id `want` arrived.
Recording consume_until(Ring& ring, uint64_t want) {
  Recording rec;
  while (rec.done.empty() || rec.done.back().first != want) {
    ENSURE(ring.wait_data(now_ns() + 20'000'000'000LL, 0));
    ring.try_consume(SIZE_MAX, rec);
  }
  return rec;
}

// A producer process killed in the middle of a multi-frame message: the
// recoverer frees its lock and ends the message with an abort frame;
// consumers drop it and carry on with the next message.
void test_recover_producer() {
  auto ring = Ring::create(64 * 1024, "rec-p");
  pid_t child = fork();
  ENSURE(child >= 0);
  if (child == 0) {
    std::string big(1 << 20, 'x');  // far larger than the ring: blocks mid-message
    Slice sl{big.data(), big.size()};
    OutMessage m{7, 0, 0, &sl, 1};
    (void)ring->push(&m, 1, kForever);
    _exit(0);
  }
  while (ring->bytes_used() < ring->capacity() / 2) usleep(1000);
  kill(child, SIGKILL);
  int st;
  waitpid(child, &st, 0);
  // A consumer is reading (and waiting for the rest of the dead producer's
  // message) while the recoverer appends the abort frame.
  Recording rec;
  std::thread consumer([&] { rec = consume_until(*ring, 8); });
  ENSURE(ring->recover_producer(child));
  ENSURE(!ring->recover_producer(child));  // nothing left to recover
  std::string after = "after";
  Slice sl{after.data(), after.size()};
  OutMessage m{8, 0, 0, &sl, 1};
  ENSURE(ring->push(&m, 1, kForever) == PushStatus::ok);
  consumer.join();
  ENSURE(rec.done.size() == 1 && rec.done[0].second == "after" && rec.aborted == 1);
  std::printf("recover producer: ok\n");
}

// A consumer process killed in the middle of reading a multi-frame message:
// its lock is freed and the next consumer skips the message's remaining frames.
void test_recover_consumer() {
  auto ring = Ring::create(64 * 1024, "rec-c");
  pid_t child = fork();
  ENSURE(child >= 0);
  if (child == 0) {
    // Dies on the second frame: the first one has been released already.
    struct DieMidway : MessageSink {
      int frames = 0;
      void begin(uint64_t, uint32_t, uint64_t, uint64_t) override {}
      void append(const char*, size_t) override {
        if (++frames == 2) kill(getpid(), SIGKILL);
      }
      void end() override {}
    } sink;
    for (;;) {
      if (ring->wait_data(kForever, 0)) ring->try_consume(1, sink);
    }
  }
  std::thread producer([&] {
    std::string big(1 << 20, 'y');
    Slice sl{big.data(), big.size()};
    std::string after = "after";
    Slice sl2{after.data(), after.size()};
    OutMessage ms[2] = {{7, 0, 0, &sl, 1}, {8, 0, 0, &sl2, 1}};
    ENSURE(ring->push(ms, 2, kForever) == PushStatus::ok);
  });
  int st;
  waitpid(child, &st, 0);
  ENSURE(WIFSIGNALED(st));
  ENSURE(ring->recover_consumer(child));
  Recording rec = consume_until(*ring, 8);
  producer.join();
  ENSURE(rec.done.size() == 1 && rec.done[0].second == "after");
  std::printf("recover consumer: ok\n");
}

// A corrupt output ring: the collector fails every request in flight with
// the preset result and stops, instead of crashing the process.
void test_collector_on_corrupt_ring() {
  auto ring = Ring::create(64 * 1024, "corrupt");
  Ledger ledger(4);
  uint32_t idx;
  ENSURE(ledger.acquire(false, 0, &idx) == Status::ok);
  Collector c(*ring, ledger);
  c.set_failure(kFlagError, "ring corrupt");
  std::string garbage(64, '\x5a');
  ring->load_raw_for_test(garbage.data(), garbage.size());
  c.start();
  ENSURE(ledger.wait(idx, now_ns() + 10'000'000'000LL, 0));
  Ledger::Result r = ledger.take(idx, [](Ledger::Result& res) { return std::move(res); });
  ENSURE(r.payload == "ring corrupt" && (r.flags & kFlagError));
  c.join();
  ENSURE(c.corrupt() && ring->aborted());
  std::printf("collector on corrupt ring: ok\n");
}

// Guardians destroyed while their workers are exiting: the supervisor's exit
// hook must never run into a destroyed guardian (ASan/TSan catch it if it does).
void test_guardian_teardown_races_exits() {
  for (int round = 0; round < 20; ++round) {
    Supervisor sup;
    auto in = Ring::create(64 * 1024, "g-in"), out = Ring::create(64 * 1024, "g-out");
    SpawnSpec spec{{"/bin/sh", "-c", "exit 0"}, {}, {}, {}};
    std::vector<pid_t> pids = sup.spawn({spec, spec, spec});
    {
      Guardian g(sup);
      GuardedServlet s;
      s.label = "test";
      s.names = {"a", "b", "c"};
      s.input = in.get();
      s.output = out.get();
      s.specs = {spec, spec, spec};
      s.pids = pids;
      s.max_restarts = round % 2;  // some rounds respawn
      s.window_ns = 1'000'000'000;
      g.add(std::move(s));
      g.start();
      if (round % 3 == 0) usleep(2000);
    }  // destroyed while exits may be in flight
    for (pid_t p : pids) sup.wait_exit(p, now_ns() + 10'000'000'000LL);
  }
  std::printf("guardian teardown: ok\n");
}

// ---------------------------------------------------------------- small units

TEST_CASE("futex: a changed word or a wake returns true, a passed deadline false") {
  std::atomic<uint32_t> word{0};
  REQUIRE(futex_wait_until(&word, 1, now_ns() + 1'000'000'000LL, false));  // value differs: at once
  const int64_t t0 = now_ns();
  REQUIRE_FALSE(futex_wait_until(&word, 0, t0 + 20'000'000LL, false));  // 20 ms, nobody wakes
  REQUIRE(now_ns() - t0 >= 19'000'000LL);
  REQUIRE_FALSE(futex_wait_until(&word, 0, now_ns() - 1, false));  // deadline already passed
  std::thread waker([&] {
    usleep(20000);
    word.store(1);
    futex_wake(&word, 1, false);
  });
  bool woke = false;
  while (word.load() == 0) woke = futex_wait_until(&word, 0, now_ns() + 10'000'000'000LL, false);
  waker.join();
  REQUIRE((woke || word.load() == 1));
}

namespace {
void push_ints(Ring& r, int from, int to) {
  for (int i = from; i < to; ++i) {
    std::string p = std::to_string(i);
    Slice sl{p.data(), p.size()};
    OutMessage m{uint64_t(i), 0, 0, &sl, 1};
    REQUIRE(r.push(&m, 1, kForever) == PushStatus::ok);
  }
}
struct Ids : MessageSink {
  std::vector<uint64_t> ids;
  void begin(uint64_t id, uint32_t, uint64_t, uint64_t) override { ids.push_back(id); }
  void append(const char*, size_t) override {}
  void end() override {}
};
}  // namespace

TEST_CASE("batcher: one at a time, what is queued, and a gathering window") {
  auto ring = Ring::create(64 * 1024, "batcher");
  BatchPolicy one;
  one.max_items = 1;
  one.spin = 0;
  BatchPolicy now;
  now.max_items = 8;
  now.spin = 0;
  BatchPolicy window = now;
  window.wait_ns = 50'000'000;  // 50 ms
  const int64_t soon = now_ns() + 5'000'000'000LL;

  push_ints(*ring, 0, 5);
  Ids a;
  REQUIRE(gather(*ring, a, one, soon) == 1);
  REQUIRE(a.ids == std::vector<uint64_t>{0});
  Ids b;
  REQUIRE(gather(*ring, b, now, soon) == 4);  // just what is there, no waiting
  REQUIRE(b.ids == std::vector<uint64_t>{1, 2, 3, 4});

  push_ints(*ring, 5, 6);
  std::thread late([&] {
    usleep(10000);
    Slice sl{"6", 1};
    OutMessage m{6, 0, 0, &sl, 1};
    ENSURE(ring->push(&m, 1, kForever) == PushStatus::ok);
  });
  Ids c;
  const int64_t t0 = now_ns();
  REQUIRE(gather(*ring, c, window, soon) == 2);  // 5 at once, 6 within the window
  late.join();
  REQUIRE(c.ids == std::vector<uint64_t>{5, 6});
  REQUIRE(now_ns() - t0 >= 45'000'000LL);  // the window is kept open until it ends

  Ids d;
  REQUIRE(gather(*ring, d, one, now_ns() + 10'000'000LL) == 0);  // idle deadline
  ring->close();
  REQUIRE(gather(*ring, d, now, kForever) == 0);  // closed and drained
  REQUIRE(ring->finished());
}

TEST_CASE("ring: a message larger than the ring passes whole; a full ring times out a push") {
  auto ring = Ring::create(64 * 1024, "big");
  std::string big(300 * 1024, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = char(i * 7);
  std::thread producer([&] {
    Slice sl{big.data(), big.size()};
    OutMessage m{1, 0, 0, &sl, 1};
    ENSURE(ring->push(&m, 1, kForever) == PushStatus::ok);
  });
  struct Whole : MessageSink {
    std::string got;
    void begin(uint64_t, uint32_t, uint64_t, uint64_t) override {}
    void append(const char* d, size_t n) override { got.append(d, n); }
    void end() override {}
  } sink;
  REQUIRE(ring->wait_data(now_ns() + 10'000'000'000LL, 0));
  REQUIRE(ring->try_consume(1, sink) == 1);
  producer.join();
  REQUIRE(sink.got == big);

  std::string chunk(ring->max_chunk(), 'x');
  Slice sl{chunk.data(), chunk.size()};
  OutMessage m{2, 0, 0, &sl, 1};
  PushStatus st = PushStatus::ok;
  for (int i = 0; i < 8 && st == PushStatus::ok; ++i) st = ring->push(&m, 1, now_ns() + 20'000'000LL);
  REQUIRE(st == PushStatus::timeout);
  ring->close();
  REQUIRE(ring->push(&m, 1, kForever) == PushStatus::closed);
}

// ---------------------------------------------------------------- stress and recovery

TEST_CASE("exit text: signal names without glibc's sigabbrev_np, exit codes") {
  // Wait statuses as waitpid() reports them: a signal in the low 7 bits, an
  // exit code in bits 8-15.
  CHECK(describe_exit(SIGKILL) == "was killed by signal 9 (SIGKILL)");
  CHECK(describe_exit(SIGSEGV) == "was killed by signal 11 (SIGSEGV)");
  CHECK(describe_exit(SIGUSR1) == "was killed by signal 10 (SIGUSR1)");
  CHECK(describe_exit(SIGRTMIN) == "was killed by signal " + std::to_string(SIGRTMIN));
  CHECK(describe_exit(3 << 8) == "exited with code 3");
  CHECK(describe_exit(0) == "exited with code 0");
  CHECK(describe_exit(0x137f) == "ended (wait status 4991)");  // stopped by SIGSTOP: neither
  for (int sig = 1; sig < 32; ++sig) {
    INFO("signal " << sig);
    const char* name = signal_name(sig);
    REQUIRE(name != nullptr);  // every standard Linux signal has its name
    CHECK(std::string(name).rfind("SIG", 0) == 0);
  }
  CHECK(signal_name(0) == nullptr);
  CHECK(signal_name(SIGRTMIN) == nullptr);
  static_assert(signal_name(SIGTERM)[3] == 'T');  // usable at compile time
}

TEST_CASE("oob message: sections are aligned, and malformed layouts are refused") {
  using namespace mps;
  const std::vector<std::string> sections = {"pickle-bytes", std::string(100, 'a'), "", "xyz"};
  std::vector<size_t> lens;
  for (const auto& s : sections) lens.push_back(s.size());
  std::string msg = oob_directory(lens);
  REQUIRE(msg.size() % kOobAlign == 0);
  for (const auto& s : sections) {
    msg += s;
    msg.append(oob_pad(s.size()), '\0');
  }
  std::vector<OobSection> got;
  REQUIRE(oob_layout(msg.data(), msg.size(), &got));
  REQUIRE(got.size() == sections.size());
  for (size_t i = 0; i < sections.size(); ++i) {
    CHECK(got[i].offset % kOobAlign == 0);
    CHECK(std::string(msg.data() + got[i].offset, got[i].length) == sections[i]);
  }
  // Truncated anywhere inside the last section: refused, never read past the end.
  const size_t last_end = got.back().offset + got.back().length;
  for (size_t cut = 0; cut < last_end; ++cut) CHECK_FALSE(oob_layout(msg.data(), cut, &got));
  // Zero sections, too many sections, a length that overruns: refused.
  std::string bad = msg;
  uint32_t n = 0;
  std::memcpy(&bad[0], &n, 4);
  CHECK_FALSE(oob_layout(bad.data(), bad.size(), &got));
  n = kOobMaxSections + 1;
  std::memcpy(&bad[0], &n, 4);
  CHECK_FALSE(oob_layout(bad.data(), bad.size(), &got));
  bad = msg;
  uint64_t huge = ~uint64_t(0) - 8;
  std::memcpy(&bad[8], &huge, 8);
  CHECK_FALSE(oob_layout(bad.data(), bad.size(), &got));
}

TEST_CASE("collector: large results go to the payload home, small ones to the slot") {
  using namespace mps;
  // A home that hands out its own buffers for raw messages and names them by index.
  struct Home : PayloadHome {
    std::vector<std::string> bufs;
    char* acquire(uint32_t flags, uint64_t total, uint32_t* slot_flags, std::string* slot_payload) override {
      if (!(flags & kFlagRaw)) return nullptr;
      bufs.emplace_back(total, '\0');
      *slot_flags = flags | kFlagObject;
      *slot_payload = std::to_string(bufs.size() - 1);
      return bufs.back().data();
    }
    void abandon(uint32_t, const std::string&) override {}
  } home;
  auto output = Ring::create(256 * 1024, "output");
  Ledger ledger(8);
  Collector collector(*output, ledger);
  collector.set_home(&home);
  collector.start();
  // One large raw result (several frames: larger than the ring's chunk),
  // one large pickled result, one small raw result.
  const std::string large(kLargePayloadBytes * 2, 'x');
  const std::string small = "tiny";
  const struct {
    const std::string* data;
    uint32_t flags;
  } sent[] = {{&large, kFlagRaw}, {&large, 0}, {&small, kFlagRaw}};
  std::vector<uint32_t> idx(3);
  for (size_t i = 0; i < 3; ++i) {
    REQUIRE(ledger.acquire(false, 0, &idx[i]) == Status::ok);
    Slice sl{sent[i].data->data(), sent[i].data->size()};
    OutMessage m{ledger.token(idx[i]), sent[i].flags, 0, &sl, 1};
    REQUIRE(output->push(&m, 1, kForever) == PushStatus::ok);
  }
  for (size_t i = 0; i < 3; ++i) REQUIRE(ledger.wait(idx[i], now_ns() + 5'000'000'000, 0));
  // The large raw one went to the home, whole.
  std::vector<Ledger::Result> got;
  for (uint32_t i : idx) got.push_back(ledger.take(i, [](Ledger::Result& r) { return std::move(r); }));
  CHECK(got[0].flags == (kFlagRaw | kFlagObject));
  REQUIRE(got[0].payload == "0");
  CHECK(home.bufs.at(0) == large);
  // The others are in their slots.
  CHECK(got[1].flags == 0);
  CHECK(got[1].payload == large);
  CHECK(got[2].flags == kFlagRaw);
  CHECK(got[2].payload == small);
  CHECK(home.bufs.size() == 1);
  output->close();
  collector.join();
}

TEST_CASE("guardian teardown races worker exits") { test_guardian_teardown_races_exits(); }
TEST_CASE("collector on a corrupt ring") { test_collector_on_corrupt_ring(); }
TEST_CASE("claims") { test_claims(); }
TEST_CASE("recover a producer killed mid-message") { test_recover_producer(); }
TEST_CASE("recover a consumer killed mid-message") { test_recover_consumer(); }
TEST_CASE("ensemble router, fail_fast") { test_ensemble_router(true); }
TEST_CASE("ensemble router, no fail_fast") { test_ensemble_router(false); }
TEST_CASE("completion queue") { test_completion_queue(); }
TEST_CASE("timeouts") { test_timeouts(); }
TEST_CASE("ring mpmc") { test_ring_mpmc(); }
TEST_CASE("window and collector") { test_window_collector(); }
