// Catch2 tests of chunks (cpp/chunk.hpp): the layout's bounds checks, and a
// chunk's trip through the stream window, a worker and the collector, which
// files it item by item and hands the blob to the first live item only.
#include <catch2/catch.hpp>

#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "batcher.hpp"
#include "chunk.hpp"
#include "message_buffer.hpp"
#include "requests.hpp"
#include "ring.hpp"
#include "stream_window.hpp"
#include "wire.hpp"

using namespace mps;

TEST_CASE("chunk: header round trip and bounds") {
  const uint64_t tokens[3] = {7, 8, (uint64_t(1) << 40) | 9};
  const uint8_t status[3] = {0, 1, 0};
  std::string msg = chunk_head(tokens, status, 3) + "BLOB";
  CHECK(msg.size() == sizeof(ChunkHeader) + 3 * 8 + 8 + 4);
  const ChunkView v = parse_chunk(msg.data(), msg.size());
  REQUIRE(v.count == 3);
  CHECK(v.token(2) == tokens[2]);
  CHECK(v.status[1] == 1);
  CHECK(std::string(v.blob, v.blob_len) == "BLOB");

  CHECK_THROWS_AS(parse_chunk(msg.data(), 4), std::runtime_error);                        // no header
  CHECK_THROWS_AS(parse_chunk(msg.data(), sizeof(ChunkHeader) + 8), std::runtime_error);  // cut tokens
  std::string zero = msg;
  const uint32_t none = 0;
  std::memcpy(zero.data(), &none, 4);
  CHECK_THROWS_AS(parse_chunk(zero.data(), zero.size()), std::runtime_error);  // count 0
  std::string huge = msg;
  const uint32_t many = kMaxChunkItems + 1;
  std::memcpy(huge.data(), &many, 4);
  CHECK_THROWS_AS(parse_chunk(huge.data(), huge.size()), std::runtime_error);  // count too large
  std::string reserved = msg;
  reserved[4] = 1;
  CHECK_THROWS_AS(parse_chunk(reserved.data(), reserved.size()), std::runtime_error);
}

TEST_CASE("chunk: window -> worker -> collector, the blob goes to the first live item") {
  auto entry = Ring::create(64 * 1024, "ch-in"), output = Ring::create(64 * 1024, "ch-out");
  RequestBook book(*output, 8, nullptr, nullptr);
  book.start(0, 0);
  StreamWindow win(book.ledger(), *entry, kForever);
  const std::string values = "VALUES";
  const Slice blob{values.data(), values.size()};
  Status st;
  REQUIRE(win.submit_chunk(3, &blob, 1, kForever, &st, true) == 3);
  CHECK(st == Status::ok);
  CHECK(book.backlog() == 3);
  CHECK(win.submit_chunk(6, &blob, 1, kForever, &st, true) == 0);  // 5 slots left: all or none
  CHECK(st == Status::backlog_full);
  CHECK(book.backlog() == 3);

  // The "worker": one message, the chunk, with the three tokens.
  BufferSink sink;
  BatchPolicy pol;
  pol.spin = 0;
  REQUIRE(gather(*entry, sink, pol, kForever) == 1);
  REQUIRE(sink.msgs.size() == 1);
  const OwnedMessage& m = sink.msgs[0];
  CHECK(m.flags & kFlagChunk);
  const ChunkView in = parse_chunk(m.payload.data(), m.payload.size());
  REQUIRE(in.count == 3);
  CHECK(m.id == in.token(0));
  CHECK(std::string(in.blob, in.blob_len) == "VALUES");

  // The first item's caller gives up before the results come.
  const uint32_t first = book.ledger().slot_of(in.token(0));
  REQUIRE(book.ledger().abandon(first, Ledger::GiveUp::timed_out));

  uint64_t tokens[3];
  for (uint32_t i = 0; i < 3; ++i) tokens[i] = in.token(i);
  const uint8_t status[3] = {0, 1, 0};
  const std::string results = chunk_head(tokens, status, 3) + "RESULTS";
  const Slice rs{results.data(), results.size()};
  OutMessage om{tokens[0], kFlagChunk, 0, &rs, 1};
  REQUIRE(output->push(&om, 1, kForever) == PushStatus::ok);

  std::vector<ChunkPartHeader> parts;
  std::vector<std::string> blobs;
  std::vector<uint32_t> flags;
  for (uint32_t i = 1; i < 3; ++i) {
    const uint32_t idx = book.ledger().slot_of(tokens[i]);
    REQUIRE(book.wait(idx, now_ns() + 5'000'000'000LL));
    book.take(idx, [&](Ledger::Result& r) {
      ChunkPartHeader h;
      REQUIRE(r.payload.size() >= sizeof h);
      std::memcpy(&h, r.payload.data(), sizeof h);
      parts.push_back(h);
      blobs.push_back(r.payload.substr(sizeof h));
      flags.push_back(r.flags);
      return 0;
    });
  }
  // Item 0 was abandoned: item 1, the first live one, holds the blob.
  CHECK(parts[0].key == tokens[0]);
  CHECK(parts[0].index == 1);
  CHECK(parts[0].has_blob == 1);
  CHECK(blobs[0] == "RESULTS");
  CHECK((flags[0] & kFlagError) != 0);  // status 1
  CHECK(parts[1].index == 2);
  CHECK(parts[1].has_blob == 0);
  CHECK(blobs[1].empty());
  CHECK((flags[1] & kFlagError) == 0);
  for (int i = 0; i < 200 && book.backlog() != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK(book.backlog() == 0);  // the abandoned slot was freed when its part came
  win.close();
  entry->close();
  book.stop();
}
