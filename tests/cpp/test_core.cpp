// Stress tests of the engine's concurrency, run as a plain executable (and
// under ASan/UBSan and TSan builds: see tests/cpp/run_sanitizers.sh).
// Every check prints what failed and exits non-zero.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "batcher.hpp"
#include "collector.hpp"
#include "ledger.hpp"
#include "ring.hpp"
#include "stream_window.hpp"

using namespace mps;

#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond)) {                                                         \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::exit(1);                                                        \
    }                                                                      \
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
    CHECK(cur == payload_for(cur_id, cur.size()));
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
        CHECK(ring->push(&m, 1, kForever) == PushStatus::ok);
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
      CHECK(i > last[size_t(p)]);  // FIFO per producer as seen by one consumer
      last[size_t(p)] = i;
      seen[size_t(p * per + i)]++;
    }
  }
  for (int v : seen) CHECK(v == 1);
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
          CHECK(out->push(&m, 1, kForever) == PushStatus::ok);
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
        StreamWindow::SubmitStatus st;
        CHECK(win.submit(&m, 1, true, kForever, &st) == 1);
      }
      win.finish();
    });
    int next = 0;
    std::vector<StreamWindow::Drained> out;
    for (;;) {
      out.clear();
      if (win.drain(64, 0, kForever, out) == 0) break;
      for (auto& d : out) {
        CHECK(d.outcome == StreamWindow::kReady);
        CHECK(ledger.slot(d.slot).payload == std::to_string(next));
        ledger.release(d.slot);
        ++next;
      }
    }
    feeder.join();
    CHECK(next == total);
  }
  // Early exit: abandon a window with requests in flight.
  {
    StreamWindow win(ledger, *entry, kForever);
    for (int i = 0; i < 50; ++i) {
      std::string s = "x";
      Slice sl{s.data(), 1};
      OutMessage m{0, 0, 0, &sl, 1};
      StreamWindow::SubmitStatus st;
      CHECK(win.submit(&m, 1, true, kForever, &st) == 1);
    }
    win.close();
  }
  int64_t deadline = now_ns() + 5000000000LL;
  while (ledger.backlog() != 0 && now_ns() < deadline) std::this_thread::yield();
  CHECK(ledger.backlog() == 0);
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
  CHECK(!ring->wait_data(now_ns() + 20000000, 0));
  CHECK(now_ns() - t0 >= 20000000);
  Ledger ledger(1);
  uint32_t idx;
  CHECK(ledger.acquire(false, 0, &idx) == Ledger::AcquireStatus::ok);
  uint32_t idx2;
  CHECK(ledger.acquire(false, 0, &idx2) == Ledger::AcquireStatus::full);
  CHECK(ledger.acquire(true, now_ns() + 10000000, &idx2) == Ledger::AcquireStatus::timeout);
  CHECK(!ledger.wait(idx, now_ns() + 10000000, 0));
  CHECK(ledger.abandon(idx));
  std::puts("timeouts: ok");
}

}  // namespace

int main() {
  test_timeouts();
  test_ring_mpmc();
  test_window_collector();
  return 0;
}
