// Catch2 tests of the meter board (cpp/meter.hpp) and of what the data path
// counts into it: ring depth and push stamps, bucketing, the request book's
// counters, and a board shared with another process.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "futex.hpp"
#include "ledger.hpp"
#include "message_buffer.hpp"
#include "meter.hpp"
#include "ring.hpp"

using namespace mps;

namespace {

struct StampSink : MessageSink {
  std::vector<int64_t> stamps;
  void begin(uint64_t, uint32_t, uint64_t, uint64_t) override { stamps.push_back(pushed_at); }
  void append(const char*, size_t) override {}
  void end() override {}
};

void push_one(Ring& r, uint64_t id, const std::string& payload) {
  Slice sl{payload.data(), payload.size()};
  OutMessage m{id, 0, 0, &sl, 1};
  REQUIRE(r.push(&m, 1, kForever) == PushStatus::ok);
}

}  // namespace

TEST_CASE("meter: time buckets follow the 1-2-5 bounds, sizes the powers of two") {
  CHECK(time_bucket(0) == 0);
  CHECK(time_bucket(1'000) == 0);  // bounds are inclusive
  CHECK(time_bucket(1'001) == 1);
  CHECK(time_bucket(3'000) == 2);
  CHECK(time_bucket(1'000'000'000) == 18);
  CHECK(time_bucket(int64_t(1) << 62) == kTimeBuckets - 1);  // +Inf
  CHECK(size_bucket(1) == 0);
  CHECK(size_bucket(2) == 1);
  CHECK(size_bucket(3) == 2);
  CHECK(size_bucket(4) == 2);
  CHECK(size_bucket(1024) == 10);
  CHECK(size_bucket(1025) == kSizeBuckets - 1);
}

TEST_CASE("meter: a record reads back what was counted, in the documented word order") {
  auto board = MeterBoard::create(4);
  MeterRecord& r = board->record(2);
  bump(r.own[kWorkerIn], 5);
  bump(r.kept[kKeptCrashes]);
  observe_size(r.sizes, 3);
  observe_time(r.waits, 1'500);
  observe_time(r.times, 7'000, 2);
  const std::vector<uint64_t> w = board->read(2);
  REQUIRE(w.size() == kRecordWords);
  CHECK(w[kWorkerIn] == 5);
  CHECK(w[16 + kKeptCrashes] == 1);
  const size_t sizes = 24, waits = sizes + kSizeBuckets + 1, times = waits + kTimeBuckets + 1;
  CHECK(w[sizes + 2] == 1);
  CHECK(w[sizes + kSizeBuckets] == 3);  // sum
  CHECK(w[waits + 1] == 1);
  CHECK(w[waits + kTimeBuckets] == 1'500);
  CHECK(w[times + 3] == 2);
  CHECK(w[times + kTimeBuckets] == 14'000);
  CHECK(board->read(1) == std::vector<uint64_t>(kRecordWords, 0));  // others untouched
  CHECK_THROWS_AS(board->record(4), std::out_of_range);
}

TEST_CASE("meter: another process counting into an attached board is seen by the creator") {
  auto board = MeterBoard::create(2);
  const int fd = dup(board->fd());
  pid_t child = fork();
  if (child == 0) {
    auto mine = MeterBoard::attach(fd);
    for (int i = 0; i < 1000; ++i) bump(mine->record(1).own[kWorkerOut]);
    _exit(0);
  }
  close(fd);
  int st = 0;
  REQUIRE(waitpid(child, &st, 0) == child);
  CHECK(board->read(1)[kWorkerOut] == 1000);
}

TEST_CASE("ring: depth counts messages in the ring; every frame carries when it was pushed") {
  auto r = Ring::create(1 << 16, "test-depth");
  CHECK(r->depth() == 0);
  const int64_t before = now_ns();
  push_one(*r, 1, "a");
  push_one(*r, 2, std::string(r->max_chunk() * 3, 'x'));  // several frames, one message
  CHECK(r->depth() == 2);
  CHECK(r->pushed() == 2);
  StampSink sink;
  std::thread reader([&] {
    ShmLockGuard g(r->consumer_lock());
    while (sink.stamps.size() < 2) (void)r->consume_locked(8, sink);
  });
  reader.join();
  CHECK(r->depth() == 0);
  REQUIRE(sink.stamps.size() == 2);
  for (int64_t s : sink.stamps) CHECK((s >= before && s <= now_ns()));
}

TEST_CASE("ledger: admissions, refusals noted by the caller, give-ups, frees and latency are counted") {
  auto board = MeterBoard::create(1);
  MeterRecord& rec = board->record(0);
  Ledger ledger(2);
  ledger.set_meter(&rec);
  CHECK(rec.own[kServerCapacity].load() == 2);
  uint32_t a, b, c;
  REQUIRE(ledger.acquire(false, 0, &a) == Status::ok);
  REQUIRE(ledger.acquire(false, 0, &b) == Status::ok);
  REQUIRE(ledger.acquire(false, 0, &c) == Status::backlog_full);
  ledger.note_rejected();
  CHECK(rec.own[kServerAdmitted].load() == 2);
  CHECK(rec.own[kServerRejected].load() == 1);
  // a: its caller times out; the result comes later, for nobody.
  REQUIRE(ledger.abandon(a, Ledger::GiveUp::timed_out));
  uint32_t idx;
  REQUIRE(ledger.open(ledger.token(a), &idx) != nullptr);
  (void)ledger.finish_quietly(idx);
  // b: delivered and taken.
  REQUIRE(ledger.open(ledger.token(b), &idx) != nullptr);
  (void)ledger.finish_quietly(idx);
  ledger.take(b, [](Ledger::Result&) { return 0; });
  CHECK(rec.own[kServerTimedOut].load() == 1);
  CHECK(rec.own[kServerCancelled].load() == 0);
  CHECK(rec.own[kServerFiled].load() == 1);
  CHECK(rec.own[kServerLate].load() == 1);
  CHECK(rec.own[kServerFreed].load() == 1);      // b, by its caller
  CHECK(rec.own[kServerFreedLate].load() == 1);  // a, by the collector
  uint64_t latencies = 0;
  for (const auto& bucket : rec.times.bucket) latencies += bucket.load();
  CHECK(latencies == 2);  // every result that arrived, wanted or not
}
