// Catch2 tests of the HTTP front (cpp/http_front.hpp) against a real request
// book and an echo "worker" thread, over real sockets with a Beast client,
// and of its translation layer (cpp/http_message.hpp).  Run under ASan/UBSan
// and TSan like every C++ test: the front's I/O threads, the pusher, the
// collector and the drain all meet here.
#include <catch2/catch.hpp>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "batcher.hpp"
#include "http_front.hpp"
#include "http_message.hpp"
#include "message_buffer.hpp"
#include "requests.hpp"
#include "ring.hpp"
#include "wire.hpp"

using namespace mps;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

// Answers every message of `in` on `out` as a terminal worker does for the
// front: a body "sleep" waits 300 ms first; the answer is HttpHead + body.
std::thread http_echo(Ring& in, Ring& out) {
  return std::thread([&in, &out] {
    BufferSink sink;
    BatchPolicy pol;
    pol.spin = 0;
    for (;;) {
      sink.msgs.clear();
      if (gather(in, sink, pol, kForever) == 0) return;
      for (auto& m : sink.msgs) {
        if (m.payload == "sleep") std::this_thread::sleep_for(std::chrono::milliseconds(300));
        std::string p(sizeof(HttpHead), '\0');
        HttpHead h{200, uint8_t(HttpBody::text), 0};
        std::memcpy(p.data(), &h, sizeof h);
        p += (m.flags & kFlagRequest) ? std::string("record") : m.payload;
        Slice sl{p.data(), p.size()};
        const bool front = (m.id & kTokenHttp) != 0;
        OutMessage om{m.id, front ? kFlagHttp : m.flags, m.aux, &sl, 1};
        if (out.push(&om, 1, kForever) != PushStatus::ok) return;
      }
    }
  });
}

struct Reply {
  unsigned status = 0;
  std::string body, content_type;
};

Reply request(uint16_t port, http::verb method, const std::string& target, const std::string& body = "") {
  asio::io_context ioc;
  beast::tcp_stream stream(ioc);
  stream.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  http::request<http::string_body> req{method, target, 11};
  req.set(http::field::host, "127.0.0.1");
  req.body() = body;
  req.prepare_payload();
  http::write(stream, req);
  beast::flat_buffer buf;
  http::response<http::string_body> res;
  http::read(stream, buf, res);
  beast::error_code ec;
  stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  return {res.result_int(), res.body(), std::string(res[http::field::content_type])};
}

HttpRoutes two_routes() {
  HttpRoutes r;
  r.add({"/", 0, false});
  r.add({"/whole", 0, true});
  return r;
}

HttpFrontConfig local_config() {
  HttpFrontConfig cfg;
  cfg.port = 0;
  cfg.threads = 2;
  cfg.timeout_ns = 5'000'000'000;
  cfg.sweep_ns = 5'000'000;
  return cfg;
}

}  // namespace

TEST_CASE("http front: requests through a request book, routes, operations, drain") {
  auto entry = Ring::create(1 << 20, "http-in"), output = Ring::create(1 << 20, "http-out");
  RequestBook book(*output, 8, nullptr, nullptr);
  book.start(0, 0);
  std::thread worker = http_echo(*entry, *output);
  HttpFront front(two_routes(), local_config());
  const uint16_t port = front.port();
  REQUIRE(port != 0);
  front.start();

  // Before attach(): the process serves, but is not ready; routes say 503.
  CHECK(request(port, http::verb::get, "/healthz").status == 200);
  CHECK(request(port, http::verb::get, "/readyz").status == 503);
  CHECK(request(port, http::verb::post, "/", "x").status == 503);

  bool ready = true;
  front.attach(book, {entry.get()}, [&] { return ready; }, [] { return std::string("m 1\n"); });
  Reply r = request(port, http::verb::post, "/", "hello");
  CHECK(r.status == 200);
  CHECK(r.body == "hello");
  CHECK(r.content_type == "text/plain; charset=utf-8");
  CHECK(request(port, http::verb::put, "/whole?q=1", "b").body == "record");
  CHECK(request(port, http::verb::get, "/").status == 405);
  CHECK(request(port, http::verb::post, "/none", "x").status == 404);
  CHECK(request(port, http::verb::get, "/metrics").body == "m 1\n");
  CHECK(request(port, http::verb::get, "/readyz").status == 200);
  ready = false;
  CHECK(request(port, http::verb::get, "/readyz").status == 503);

  // Many clients at once, more than the book holds: each gets 200 or 503.
  std::vector<std::thread> clients;
  std::atomic<int> ok{0}, full{0};
  for (int i = 0; i < 16; ++i)
    clients.emplace_back([&, i] {
      Reply a = request(port, http::verb::post, "/", "c" + std::to_string(i));
      if (a.status == 200 && a.body == "c" + std::to_string(i)) ++ok;
      if (a.status == 503) ++full;
    });
  for (auto& t : clients) t.join();
  CHECK(ok + full == 16);
  CHECK(ok >= 8);

  // A drain answers what is in flight.
  std::string slow_body;  // Catch2 assertions are for the main thread only
  std::thread slow([&] { slow_body = request(port, http::verb::post, "/", "sleep").body; });
  for (int i = 0; i < 200 && front.counts().in_flight == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK(front.drain(now_ns() + 5'000'000'000) == 0);
  slow.join();
  CHECK(slow_body == "sleep");
  CHECK(book.backlog() == 0);
  entry->close();
  worker.join();
  book.stop();
}

TEST_CASE("http front: a request past its deadline is a 504; its late result frees the slot") {
  auto entry = Ring::create(1 << 20, "http-in"), output = Ring::create(1 << 20, "http-out");
  RequestBook book(*output, 4, nullptr, nullptr);
  book.start(0, 0);
  std::thread worker = http_echo(*entry, *output);
  HttpFrontConfig cfg = local_config();
  cfg.timeout_ns = 100'000'000;
  HttpFront front(two_routes(), cfg);
  front.start();
  front.attach(book, {entry.get()}, nullptr, nullptr);
  CHECK(request(front.port(), http::verb::post, "/", "sleep").status == 504);
  for (int i = 0; i < 200 && book.backlog() > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK(book.backlog() == 0);
  CHECK(request(front.port(), http::verb::post, "/", "fine").status == 200);
  front.stop();
  entry->close();
  worker.join();
  book.stop();
}

TEST_CASE("http message: request records round-trip and lies are refused") {
  HttpRequestView v{"POST", "/p", "a=1", {{"Host", "x"}, {"X-Y", ""}}, std::string_view("body\0z", 6)};
  std::string rec;
  encode_request(v, &rec);
  auto d = decode_request(rec);
  REQUIRE(d);
  CHECK(d->method == "POST");
  CHECK(d->path == "/p");
  CHECK(d->query == "a=1");
  REQUIRE(d->headers.size() == 2);
  CHECK(d->headers[1].first == "X-Y");
  CHECK(d->body == std::string_view("body\0z", 6));
  for (size_t cut = 0; cut < rec.size(); ++cut)
    CHECK_FALSE(decode_request(std::string_view(rec).substr(0, cut)));
  CHECK_FALSE(decode_request(rec + "x"));
  std::string lie = rec;
  lie[16] = char(0xff);  // the header count
  CHECK_FALSE(decode_request(lie));
}

TEST_CASE("http message: answers for every kind of result") {
  std::string ok(sizeof(HttpHead), '\0');
  HttpHead h{201, uint8_t(HttpBody::json), 0};
  std::memcpy(ok.data(), &h, sizeof h);
  HttpAnswer a = answer_for(kFlagHttp, ok + "{}");
  CHECK(a.status == 201);
  CHECK(a.content_type == kTypeJson);
  CHECK(a.body == "{}");
  CHECK(answer_for(kFlagHttp, "ab").status == 500);
  CHECK(answer_for(kFlagRaw, "raw").body == "raw");
  CHECK(answer_for(kFlagError, "pickle").status == 500);
  CHECK(answer_for(0, "pickle").status == 500);
  a = answer_for(kFlagError | kFlagCrash,
                 "process\x1fS(W)\x1fW-0\x1f"
                 "0\x1f"
                 "42\x1f"
                 "9\x1fheld 1 item");
  CHECK(a.status == 502);
  CHECK(a.body.find("pid 42") != std::string::npos);
  CHECK(a.body.find("SIGKILL") != std::string::npos);
  // The same words as the guardian's crash report (exit_text.hpp).
  const auto crash = [](const std::string& status) {
    const std::string sep(1, '\x1f');
    return "process" + sep + "S(W)" + sep + "W-0" + sep + "0" + sep + "42" + sep + status + sep +
           "held 1 item";
  };
  CHECK(describe_crash(crash("9")) ==
        "worker process W-0 (pid 42) of S(W) was killed by signal 9 (SIGKILL); it held 1 item");
  CHECK(describe_crash(crash("768")) ==
        "worker process W-0 (pid 42) of S(W) exited with code 3; it held 1 item");
  CHECK(describe_crash(crash("?")) == "worker process W-0 (pid 42) of S(W) died; it held 1 item");
  CHECK(answer_for(kFlagError | kFlagCrash, "dropped\x1f\x1f\x1f\x1f\x1f\x1fwas given up").status == 503);
  CHECK(json_string("a\"\\\n\xff") == "\"a\\\"\\\\\\u000a\xef\xbf\xbd\"");
  HttpRoutes r;
  CHECK_THROWS_AS(r.add({"/metrics", 0, false}), std::invalid_argument);
  CHECK_THROWS_AS(r.add({"x", 0, false}), std::invalid_argument);
  r.add({"/a", 1, false});
  CHECK_THROWS_AS(r.add({"/a", 0, false}), std::invalid_argument);
  REQUIRE(r.find("/a"));
  CHECK(r.find("/a")->entry == 1);
  CHECK_FALSE(r.find("/a/"));
  CHECK(split_target("/x?y=1").second == "y=1");
}
