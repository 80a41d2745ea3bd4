// Catch2 tests of the request book (cpp/requests.hpp), the stream window's
// blocking policy, the guardian's healing of thread workers, and the layout
// promises of the shared-memory structures.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "batcher.hpp"
#include "claims.hpp"
#include "guardian.hpp"
#include "message_buffer.hpp"
#include "requests.hpp"
#include "ring.hpp"
#include "shm_mutex.hpp"
#include "stream_window.hpp"
#include "wire.hpp"

using namespace mps;

namespace {

OutMessage message_of(const std::string& s, Slice& sl, uint32_t flags = 0) {
  sl = Slice{s.data(), s.size()};
  return OutMessage{0, flags, 0, &sl, 1};
}

// Echoes every message of `in` to `out` until `in` is finished (a worker).
std::thread echo(Ring& in, Ring& out) {
  return std::thread([&in, &out] {
    BufferSink sink;
    BatchPolicy pol;
    pol.spin = 0;
    for (;;) {
      sink.msgs.clear();
      if (gather(in, sink, pol, kForever) == 0) return;
      for (auto& m : sink.msgs) {
        Slice sl{m.payload.data(), m.payload.size()};
        OutMessage om{m.id, m.flags, m.aux, &sl, 1};
        if (out.push(&om, 1, kForever) != PushStatus::ok) return;
      }
    }
  });
}

std::string take_payload(RequestBook& book, uint32_t idx) {
  return book.take(idx, [](Ledger::Result& r) { return std::move(r.payload); });
}

}  // namespace

TEST_CASE("request book: admit, send, wait and take one request") {
  auto entry = Ring::create(64 * 1024, "rb-in"), output = Ring::create(64 * 1024, "rb-out");
  RequestBook book(*output, 2, nullptr, nullptr);
  book.start(0, 0);
  std::thread worker = echo(*entry, *output);
  uint32_t idx;
  REQUIRE(book.admit(false, 0, &idx) == Status::ok);
  REQUIRE(book.backlog() == 1);
  std::string x = "hello";
  Slice sl;
  REQUIRE(book.send(*entry, idx, message_of(x, sl), kForever, true) == Status::ok);
  REQUIRE(book.wait(idx, now_ns() + 5'000'000'000LL));
  CHECK(take_payload(book, idx) == "hello");
  CHECK(book.backlog() == 0);
  CHECK(book.delivered() == 1);
  entry->close();
  worker.join();
  book.stop();
  CHECK_FALSE(book.collector_running());
}

TEST_CASE("request book: capacity, closed server, stale tokens") {
  auto output = Ring::create(64 * 1024, "rb-out");
  RequestBook book(*output, 1, nullptr, nullptr);
  uint32_t a, b;
  REQUIRE(book.admit(false, 0, &a) == Status::ok);
  CHECK(book.admit(false, 0, &b) == Status::backlog_full);
  CHECK(book.admit(true, now_ns() + 10'000'000, &b) == Status::backlog_timeout);
  const uint64_t token = book.token(a);
  CHECK(book.slot_of(token) == a);
  book.withdraw(a);
  CHECK(book.backlog() == 0);
  CHECK_THROWS_AS(book.slot_of(token + (uint64_t(1) << 32)), std::invalid_argument);
  CHECK_THROWS_AS(book.slot_of(uint64_t(7)), std::invalid_argument);  // no slot 7 in a book of 1
  book.close();
  CHECK(book.admit(true, kForever, &b) == Status::closed);
}

TEST_CASE("request book: a send that finds the ring full keeps the slot only when it may retry") {
  auto entry = Ring::create(64 * 1024, "rb-in"), output = Ring::create(64 * 1024, "rb-out");
  RequestBook book(*output, 64, nullptr, nullptr);
  const std::string big(entry->max_chunk(), 'x');
  Slice sl;
  Status st = Status::ok;
  uint32_t idx = 0;
  int sent = 0;
  while (st == Status::ok) {  // nobody reads the entry ring: fill it
    REQUIRE(book.admit(false, 0, &idx) == Status::ok);
    st = book.send(*entry, idx, message_of(big, sl), kForever, false);
    if (st == Status::ok) ++sent;
  }
  REQUIRE(st == Status::push_timeout);
  CHECK(book.backlog() == uint32_t(sent + 1));  // kept: the caller may retry with blocking allowed
  CHECK(book.send(*entry, idx, message_of(big, sl), now_ns() + 10'000'000, true) == Status::push_timeout);
  CHECK(book.backlog() == uint32_t(sent));  // the deadline passed: withdrawn
  REQUIRE(book.admit(false, 0, &idx) == Status::ok);
  entry->close();
  CHECK(book.send(*entry, idx, message_of(big, sl), kForever, true) == Status::closed);
  CHECK(book.backlog() == uint32_t(sent));
}

TEST_CASE("request book: an abandoned request's result is dropped on arrival, through the disposer") {
  auto entry = Ring::create(64 * 1024, "rb-in"), output = Ring::create(64 * 1024, "rb-out");
  std::vector<std::string> disposed;
  RequestBook book(*output, 4, nullptr,
                   [&](uint32_t, const std::string& payload) { disposed.push_back(payload); });
  book.start(0, 0);
  uint32_t idx;
  REQUIRE(book.admit(false, 0, &idx) == Status::ok);
  std::string x = "late";
  Slice sl;
  REQUIRE(book.send(*entry, idx, message_of(x, sl), kForever, true) == Status::ok);
  book.abandon(idx, mps::Ledger::GiveUp::cancelled);
  CHECK(book.backlog() == 1);  // counted until its result leaves the pipeline
  std::thread worker = echo(*entry, *output);
  const int64_t deadline = now_ns() + 5'000'000'000LL;
  while (book.backlog() != 0 && now_ns() < deadline) std::this_thread::yield();
  CHECK(book.backlog() == 0);
  entry->close();
  worker.join();
  book.stop();
  REQUIRE(disposed.size() == 1);
  CHECK(disposed[0] == "late");
}

TEST_CASE("request book: teardown fails what is in flight and reports async requests") {
  auto output = Ring::create(64 * 1024, "rb-out");
  RequestBook book(*output, 4, nullptr, nullptr);
  uint32_t sync_idx, async_idx;
  REQUIRE(book.admit(false, 0, &sync_idx) == Status::ok);
  REQUIRE(book.admit(false, 0, &async_idx, Ledger::Notify::async) == Status::ok);
  book.fail_pending(kFlagError, "stopped");
  CHECK(book.wait(sync_idx, now_ns(), 0));
  std::vector<uint64_t> tokens;
  book.drain_async(tokens);
  REQUIRE(tokens == std::vector<uint64_t>{book.token(async_idx)});
  auto r = book.take(async_idx, [](Ledger::Result& res) { return std::move(res); });
  CHECK((r.flags == kFlagError && r.payload == "stopped"));
  CHECK(take_payload(book, sync_idx) == "stopped");
}

TEST_CASE("ledger: take() frees the slot even when the consumer throws") {
  Ledger ledger(1);
  uint32_t idx;
  REQUIRE(ledger.acquire(false, 0, &idx) == Status::ok);
  CHECK_THROWS_AS(ledger.take(idx, [](Ledger::Result&) { return 0; }), std::logic_error);  // not done yet
  ledger.fail_pending(0, "x");
  CHECK_THROWS_AS(ledger.take(idx, [](Ledger::Result&) -> int { throw std::runtime_error("decode"); }),
                  std::runtime_error);
  CHECK(ledger.backlog() == 0);
}

TEST_CASE("stream window: when a non-blocking submit should be retried blocking") {
  CHECK(StreamWindow::worth_blocking(0, 4, Status::backlog_full, true));  // the first waits for a slot
  CHECK_FALSE(StreamWindow::worth_blocking(0, 4, Status::backlog_full, false));
  CHECK_FALSE(StreamWindow::worth_blocking(1, 4, Status::backlog_full, true));  // later ones never wait
  CHECK(StreamWindow::worth_blocking(2, 4, Status::push_timeout, false));       // ring space: always
  CHECK_FALSE(StreamWindow::worth_blocking(4, 4, Status::ok, true));
  CHECK_FALSE(StreamWindow::worth_blocking(0, 4, Status::closed, true));
}

TEST_CASE("guardian: a thread worker's death fails what it held, within one restart budget") {
  Supervisor sup;
  auto in = Ring::create(64 * 1024, "g-in"), out = Ring::create(64 * 1024, "g-out");
  auto claims = ClaimTable::create(2, 64);
  Guardian g(sup);
  GuardedServlet s;
  s.label = "ThreadServlet(T)";
  s.names = {"T-thread-0", "T-thread-1"};
  s.kind = WorkerKind::thread;
  s.max_restarts = 1;
  s.window_ns = 60'000'000'000LL;
  s.input = in.get();
  s.output = out.get();
  s.claims = claims.get();
  const uint32_t id = g.add(std::move(s));
  g.start();
  REQUIRE(claims->claim(0, 41, 7));
  REQUIRE(g.thread_stopped(id, 0, "SystemExit(3)"));  // first death: restart
  BufferSink sink;
  REQUIRE(out->try_consume(SIZE_MAX, sink) == 1);
  const OwnedMessage& m = sink.msgs[0];
  CHECK((m.id == 41 && m.aux == 7 && m.flags == (kFlagError | kFlagCrash)));
  CHECK(m.payload.rfind("thread\x1fThreadServlet(T)\x1fT-thread-0\x1f"
                        "0\x1f",
                        0) == 0);
  CHECK(m.payload.find("was stopped by SystemExit(3) while processing this item") != std::string::npos);
  CHECK_FALSE(g.thread_stopped(id, 0, "SystemExit(3)"));  // budget spent: this worker ends
  CHECK(g.info(id).restarts == 1);
  CHECK(g.info(id).crashes == 2);
  CHECK_FALSE(g.info(id).failed);  // worker 1 still serves
  g.thread_lost(id, 1);            // ... until it is lost too: the failer answers everything
  CHECK(g.info(id).failed);
  std::string x = "item";
  Slice sl;
  OutMessage item = message_of(x, sl);
  item.id = 99;
  REQUIRE(in->push(&item, 1, kForever) == PushStatus::ok);
  sink.msgs.clear();
  const int64_t deadline = now_ns() + 5'000'000'000LL;
  while (sink.msgs.empty() && now_ns() < deadline) {
    if (out->wait_data(now_ns() + 100'000'000)) (void)out->try_consume(SIZE_MAX, sink);
  }
  REQUIRE(sink.msgs.size() == 1);
  CHECK(sink.msgs[0].id == 99);
  CHECK(sink.msgs[0].payload.rfind("servlet\x1f", 0) == 0);
  CHECK(sink.msgs[0].payload.find("has no live worker left") != std::string::npos);
  in->close();
}

TEST_CASE("shared-memory structures are valid when zeroed") {
  // The memfds are zero-filled: a default-constructed header must be all zero bytes.
  alignas(RingHeader) unsigned char ring_bytes[sizeof(RingHeader)];
  std::memset(ring_bytes, 0xab, sizeof ring_bytes);
  auto* h = new (ring_bytes) RingHeader();
  h->magic = 0;
  h->capacity = 0;
  CHECK(std::all_of(ring_bytes, ring_bytes + sizeof ring_bytes, [](unsigned char c) { return c == 0; }));
  alignas(ShmMutex) unsigned char mutex_bytes[sizeof(ShmMutex)];
  std::memset(mutex_bytes, 0xab, sizeof mutex_bytes);
  new (mutex_bytes) ShmMutex();
  CHECK(std::all_of(mutex_bytes, mutex_bytes + sizeof mutex_bytes, [](unsigned char c) { return c == 0; }));
  // ... and a zero-filled ClaimTable section is empty.
  auto table = ClaimTable::create(1, 8);
  CHECK(table->take(0).empty());
}
