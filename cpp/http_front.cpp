#include "http_front.hpp"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdio>
#include <future>
#include <optional>
#include <unordered_map>

#include "futex.hpp"
#include "quiet_thread.hpp"
#include "wire.hpp"

namespace mps {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

std::chrono::nanoseconds ns(int64_t v) { return std::chrono::nanoseconds(v); }

// Bytes a connection may buffer beyond the parser's own limits.
constexpr size_t kReadBufferBytes = 64 << 10;

}  // namespace

// A request waiting for its result (see the header's invariants).
struct Waiter {
  std::shared_ptr<HttpFront::Session> session;
  uint64_t token = 0;
  int64_t deadline = 0;
  bool pushed = false;  // in the entry ring (until then the pusher owns the deadline)
};

// A push the I/O thread could not make without waiting.
struct PushJob {
  std::shared_ptr<HttpFront::Session> session;
  uint32_t idx;
  Ring* ring;
  OutMessage msg;
  Slice part;
  int64_t deadline;
};

struct HttpFront::Impl {
  Impl(HttpFront& f, HttpRoutes r, HttpFrontConfig c, AccessLog a)
      : front(f),
        routes(std::move(r)),
        cfg(std::move(c)),
        access(std::move(a)),
        ioc(int(std::max(1u, cfg.threads))),
        accepting(asio::make_strand(ioc)),
        acceptor(accepting),
        sweeper(ioc),
        backoff(accepting) {}

  void accept();
  void sweep();
  void on_done();
  void push_loop();
  // Takes the waiter of slot idx if it is still `token`'s (under mu).
  std::shared_ptr<Session> take_waiter(uint32_t idx, uint64_t token);
  std::shared_ptr<Session> take_waiter_locked(uint32_t idx);
  void count_response(unsigned status);

  HttpFront& front;
  const HttpRoutes routes;
  const HttpFrontConfig cfg;
  const AccessLog access;
  // Set once by attach(), before `serving` is stored (release); read only
  // after `serving` was loaded true (acquire).
  RequestBook* book_ = nullptr;
  std::vector<Ring*> entries;
  Probe ready;
  Text metrics;
  std::atomic<bool> serving{false};
  RequestBook& book() { return *book_; }

  // Declared before the io_context: sessions destroyed with it still find these.
  std::mutex mu;  // waiting, done, in_flight
  std::vector<Waiter> waiting;
  std::vector<uint64_t> done;
  uint32_t in_flight = 0;
  std::condition_variable idle;
  std::atomic<bool> done_posted{false};

  std::mutex sessions_mu;  // never held while a session may be destroyed
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions;

  std::mutex push_mu;
  std::condition_variable push_cv;
  std::deque<PushJob> push_jobs;
  bool push_stop = false;
  std::thread pusher;

  std::atomic<uint64_t> accepted{0}, requests{0}, responses{0}, rejected{0}, timed_out{0}, bad{0}, refused{0};
  std::atomic<uint32_t> connections{0};

  asio::io_context ioc;
  // The acceptor and its back-off timer live on one strand: accept handlers
  // and the drain's close never run at once.
  asio::strand<asio::io_context::executor_type> accepting;
  tcp::acceptor acceptor;
  asio::steady_timer sweeper;
  asio::steady_timer backoff;  // after accept() ran out of file descriptors
  std::vector<std::thread> threads;
};

class HttpFront::Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Impl& f, tcp::socket s) : f_(f), stream_(std::move(s)), buf_(kReadBufferBytes + f.cfg.max_header) {}
  ~Session() {
    f_.connections.fetch_sub(1, std::memory_order_relaxed);
    std::lock_guard<std::mutex> g(f_.sessions_mu);
    f_.sessions.erase(this);
  }

  void start() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read(); });
  }

  // Answers the request in flight (on the session's strand).
  void respond(HttpAnswer a, bool close = false) {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this(), a = std::move(a), close]() mutable {
      self->write(std::move(a), close);
    });
  }

  // Closes the connection unless a response is being written (it closes
  // after that one: the front is draining).  On the session's strand.
  void shut() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      if (!self->writing_) self->close();
    });
  }

 private:
  void read() {
    parser_.emplace();
    parser_->header_limit(f_.cfg.max_header);
    parser_->body_limit(f_.cfg.max_body);
    if (buf_.size() > 0) return read_header();
    // Between requests: the idle timeout.  Once the first bytes are here, the read timeout.
    stream_.expires_after(ns(f_.cfg.idle_timeout_ns));
    stream_.async_read_some(buf_.prepare(4096), [self = shared_from_this()](beast::error_code ec, size_t n) {
      if (ec) return self->close();
      self->buf_.commit(n);
      self->read_header();
    });
  }

  // Parses what is buffered, without reading: the usual case, where one
  // read brought the whole request, costs no asynchronous operation (nor its
  // timer).  False if the parser failed (on_error() was called).
  bool parse_buffered(bool header_only) {
    while (buf_.size() > 0 && !(header_only ? parser_->is_header_done() : parser_->is_done())) {
      beast::error_code ec;
      const size_t n = parser_->put(buf_.data(), ec);
      buf_.consume(n);
      if (ec == http::error::need_more) break;
      if (ec) {
        on_error(ec);
        return false;
      }
      if (n == 0) break;
    }
    return true;
  }

  void read_header() {
    t0_ = now_ns();  // the request's clock starts with its first bytes
    if (!parse_buffered(true)) return;
    if (parser_->is_header_done()) return on_header({});
    stream_.expires_after(ns(f_.cfg.read_timeout_ns));
    http::async_read_header(
        stream_, buf_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
  }

  void on_header(beast::error_code ec) {
    if (ec) return on_error(ec);
    auto& req = parser_->get();
    // Beast bounds each read of the header, not the header as a whole:
    // count what it holds (request line, and each field with ": " and CRLF).
    size_t header_bytes = req.method_string().size() + req.target().size() + 12;
    for (const auto& h : req) header_bytes += h.name_string().size() + h.value().size() + 4;
    if (header_bytes > f_.cfg.max_header) return on_error(http::error::header_limit);
    // A transfer coding other than chunked leaves the body's length unknown
    // (RFC 9112 6.3): refuse it rather than guess where the next request starts.
    if (req.find(http::field::transfer_encoding) != req.end() && !parser_->chunked())
      return on_error(http::error::bad_transfer_encoding);
    if (!parser_->is_done() && beast::iequals(req[http::field::expect], "100-continue")) {
      // The client waits for a go-ahead before it sends the body.
      auto cont = std::make_shared<http::response<http::empty_body>>(http::status::continue_, req.version());
      http::async_write(stream_, *cont, [self = shared_from_this(), cont](beast::error_code ec2, size_t) {
        if (ec2) return self->close();
        self->read_body();
      });
      return;
    }
    if (parser_->is_done()) return handle();
    read_body();
  }

  void read_body() {
    if (!parse_buffered(false)) return;
    if (parser_->is_done()) return handle();
    stream_.expires_after(ns(f_.cfg.read_timeout_ns));
    http::async_read(stream_, buf_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->on_error(ec);
      self->handle();
    });
  }

  void on_error(beast::error_code ec) {
    // The client went away or broke the protocol.  Say why when the
    // connection can still carry an answer; a timed-out stream is closed.
    if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
        ec == asio::error::operation_aborted || ec == asio::error::connection_reset ||
        ec == asio::error::eof || ec == http::error::partial_message)
      return close();
    f_.bad.fetch_add(1, std::memory_order_relaxed);
    version_ = 11;
    keep_alive_ = false;
    if (parser_ && parser_->is_header_done()) {
      method_ = std::string(parser_->get().method_string());
      target_ = std::string(parser_->get().target());
    } else {
      method_ = target_ = "-";
    }
    if (ec == http::error::body_limit)
      return write(
          error_answer(413, "PayloadTooLarge",
                       "the request body is larger than " + std::to_string(f_.cfg.max_body) + " bytes"),
          true);
    if (ec == http::error::header_limit)
      return write(error_answer(431, "HeaderTooLarge",
                                "the request's headers are larger than " + std::to_string(f_.cfg.max_header) +
                                    " bytes"),
                   true);
    if (ec.category() == http::make_error_code(http::error::bad_method).category())
      return write(error_answer(400, "BadRequest", "malformed HTTP request: " + ec.message()), true);
    close();
  }

  void handle() {
    auto& req = parser_->get();
    f_.requests.fetch_add(1, std::memory_order_relaxed);
    version_ = req.version();
    keep_alive_ = req.keep_alive();
    if (f_.access) {
      method_ = std::string(req.method_string());
      target_ = std::string(req.target());
    }
    const auto [path, query] = split_target(req.target());
    if (f_.front.draining())
      return write(error_answer(503, "ServiceUnavailable", "the server is shutting down"), true);
    if (HttpRoutes::reserved(path)) return operations(path, req.method());
    const HttpRoute* route = f_.routes.find(path);
    if (!route) return write(error_answer(404, "NotFound", "no route for " + std::string(path)));
    if (!route->whole_request && req.method() != http::verb::post) {
      HttpAnswer a = error_answer(405, "MethodNotAllowed", std::string(path) + " takes POST requests");
      allow_ = "POST";
      return write(std::move(a));
    }
    if (!f_.serving.load(std::memory_order_acquire)) {
      HttpAnswer a = error_answer(503, "ServiceUnavailable", "the server is starting; retry later");
      a.retry_after = f_.cfg.retry_after;
      return write(std::move(a));
    }
    submit(*route, req, query);
  }

  void operations(std::string_view path, http::verb method) {
    if (method != http::verb::get) {
      allow_ = "GET";
      return write(error_answer(405, "MethodNotAllowed", std::string(path) + " takes GET requests"));
    }
    HttpAnswer a;
    a.content_type = kTypeText;
    if (path == "/healthz") {
      a.body = "ok\n";
    } else if (path == "/readyz") {
      const bool ok =
          !f_.front.draining() && f_.serving.load(std::memory_order_acquire) && (!f_.ready || f_.ready());
      a.status = ok ? 200 : 503;
      a.body = ok ? "ready\n" : "not ready\n";
    } else {
      a.content_type = "text/plain; version=0.0.4; charset=utf-8";
      try {
        a.body = f_.serving.load(std::memory_order_acquire) && f_.metrics ? f_.metrics() : std::string();
      } catch (const std::exception& e) {
        a = error_answer(500, "MetricsError", e.what());
      }
    }
    write(std::move(a));
  }

  void submit(const HttpRoute& route, http::request<http::string_body>& req, std::string_view query) {
    uint32_t idx = 0;
    Status st = f_.book().admit(false, 0, &idx, Ledger::Notify::front);
    if (st == Status::backlog_full) {
      f_.book().ledger().note_rejected();
      f_.rejected.fetch_add(1, std::memory_order_relaxed);
      HttpAnswer a = error_answer(503, "ServerBacklogFull", "the server is at capacity; retry later");
      a.retry_after = f_.cfg.retry_after;
      return write(std::move(a));
    }
    if (st != Status::ok)
      return write(error_answer(503, "ServiceUnavailable", "the server is not running"), true);
    Slice part{nullptr, 0};
    uint32_t flags = kFlagRaw;
    if (route.whole_request) {
      HttpRequestView v;
      v.method = req.method_string();
      v.path = split_target(req.target()).first;
      v.query = query;
      for (const auto& h : req) v.headers.emplace_back(h.name_string(), h.value());
      v.body = req.body();
      record_.clear();
      encode_request(v, &record_);
      part = {record_.data(), record_.size()};
      flags = kFlagRequest;
    } else {
      part = {req.body().data(), req.body().size()};
    }
    const int64_t deadline = t0_ + f_.cfg.timeout_ns;
    const uint64_t token = f_.book().token(idx);
    {
      std::lock_guard<std::mutex> g(f_.mu);
      f_.waiting[idx] = Waiter{shared_from_this(), token, deadline, false};
      ++f_.in_flight;
    }
    Ring* ring = f_.entries[route.entry];
    part_ = part;
    OutMessage m{0, flags, 0, &part_, 1};
    st = f_.book().send(*ring, idx, m, deadline, false);
    if (st == Status::ok) {
      std::lock_guard<std::mutex> g(f_.mu);
      if (f_.waiting[idx].token == token) f_.waiting[idx].pushed = true;
      return;
    }
    if (st == Status::push_timeout) {  // no room now, or several frames: the pusher waits for room
      std::lock_guard<std::mutex> g(f_.push_mu);
      f_.push_jobs.push_back(PushJob{shared_from_this(), idx, ring, m, part, deadline});
      f_.push_cv.notify_one();
      return;
    }
    // Closed: the slot was withdrawn.
    std::shared_ptr<Session> self = f_.take_waiter(idx, token);
    if (self) write(error_answer(503, "ServiceUnavailable", "the server is not running"), true);
  }

  void write(HttpAnswer a, bool close = false) {
    if (close) keep_alive_ = false;
    res_ = {};
    res_.version(version_);
    res_.result(a.status);
    res_.set(http::field::server, "mpserver");
    res_.set(http::field::content_type, a.content_type);
    if (a.retry_after) res_.set(http::field::retry_after, std::to_string(a.retry_after));
    if (!allow_.empty()) {
      res_.set(http::field::allow, allow_);
      allow_.clear();
    }
    res_.keep_alive(keep_alive_ && !f_.front.draining());
    res_.body() = std::move(a.body);
    res_.prepare_payload();
    f_.count_response(a.status);
    if (f_.access) {
      char line[64];
      std::snprintf(line, sizeof line, " %u %.6f", a.status, double(now_ns() - t0_) / 1e9);
      f_.access(method_ + " " + target_ + line);
    }
    stream_.expires_after(ns(f_.cfg.read_timeout_ns));
    writing_ = true;
    http::async_write(stream_, res_, [self = shared_from_this()](beast::error_code ec, size_t) {
      self->writing_ = false;
      if (ec || !self->res_.keep_alive()) return self->close();
      self->read();
    });
  }

  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.close();
  }

  Impl& f_;
  beast::tcp_stream stream_;
  beast::flat_buffer buf_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> res_;
  std::string record_;  // the request record of a whole-request route
  Slice part_{nullptr, 0};
  std::string method_, target_, allow_;
  unsigned version_ = 11;
  bool keep_alive_ = true;
  bool writing_ = false;
  int64_t t0_ = 0;
};

// ------------------------------------------------------------------ Impl

void HttpFront::Impl::count_response(unsigned status) {
  responses.fetch_add(1, std::memory_order_relaxed);
  if (status == 504) timed_out.fetch_add(1, std::memory_order_relaxed);
}

std::shared_ptr<HttpFront::Session> HttpFront::Impl::take_waiter_locked(uint32_t idx) {
  Waiter& w = waiting[idx];
  std::shared_ptr<Session> s = std::move(w.session);
  w = Waiter{};
  if (s && --in_flight == 0) idle.notify_all();
  return s;
}

std::shared_ptr<HttpFront::Session> HttpFront::Impl::take_waiter(uint32_t idx, uint64_t token) {
  std::lock_guard<std::mutex> g(mu);
  if (!waiting[idx].session || waiting[idx].token != token) return nullptr;
  return take_waiter_locked(idx);
}

void HttpFront::Impl::accept() {
  // One I/O thread needs no strands (their type-erased executors cost a few
  // percent of the front's time); several do.
  asio::any_io_executor ex =
      cfg.threads > 1 ? asio::any_io_executor(asio::make_strand(ioc)) : ioc.get_executor();
  acceptor.async_accept(ex, [this](beast::error_code ec, tcp::socket sock) {
    if (!acceptor.is_open()) return;
    if (ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space) {
      // Out of file descriptors: let connections end before trying again (no busy loop).
      backoff.expires_after(std::chrono::milliseconds(50));
      backoff.async_wait([this](beast::error_code e) {
        if (!e) accept();
      });
      return;
    }
    if (!ec) {
      if (connections.load(std::memory_order_relaxed) >= cfg.max_connections || front.draining()) {
        refused.fetch_add(1, std::memory_order_relaxed);
        beast::error_code ignored;
        sock.close(ignored);
      } else {
        beast::error_code ignored;
        sock.set_option(tcp::no_delay(true), ignored);
        accepted.fetch_add(1, std::memory_order_relaxed);
        connections.fetch_add(1, std::memory_order_relaxed);
        auto s = std::make_shared<Session>(*this, std::move(sock));
        {
          std::lock_guard<std::mutex> g(sessions_mu);
          sessions.emplace(s.get(), s);
        }
        s->start();
      }
    }
    accept();
  });
}

void HttpFront::Impl::sweep() {
  sweeper.expires_after(ns(cfg.sweep_ns));
  sweeper.async_wait([this](beast::error_code ec) {
    if (ec) return;
    const int64_t now = now_ns();
    std::vector<std::pair<uint32_t, std::shared_ptr<Session>>> late;
    {
      std::lock_guard<std::mutex> g(mu);
      if (in_flight)
        for (uint32_t i = 0; i < waiting.size(); ++i)
          if (waiting[i].session && waiting[i].pushed && waiting[i].deadline <= now)
            late.emplace_back(i, take_waiter_locked(i));
    }
    for (auto& [idx, s] : late) {
      book().abandon(idx, Ledger::GiveUp::timed_out);
      s->respond(error_answer(504, "TimeoutError", "no result within the request timeout"));
    }
    late.clear();  // sessions dropped outside mu
    sweep();
  });
}

void HttpFront::Impl::on_done() {
  done_posted.store(false, std::memory_order_release);
  std::vector<uint64_t> tokens;
  {
    std::lock_guard<std::mutex> g(mu);
    tokens.swap(done);
  }
  for (uint64_t tok : tokens) {
    const uint32_t idx = uint32_t(tok & 0xffffffffu);
    if (idx >= waiting.size()) continue;
    std::shared_ptr<Session> s = take_waiter(idx, tok);
    if (!s) continue;  // given up (timeout, drain): the ledger dropped or will drop it
    HttpAnswer a =
        book().take(idx, [](Ledger::Result& r) { return answer_for(r.flags, std::move(r.payload)); });
    s->respond(std::move(a));
  }
}

void HttpFront::Impl::push_loop() {
  for (;;) {
    PushJob job;
    bool stopping = false;
    {
      std::unique_lock<std::mutex> lk(push_mu);
      push_cv.wait(lk, [&] { return push_stop || !push_jobs.empty(); });
      if (push_jobs.empty()) return;
      job = std::move(push_jobs.front());
      push_jobs.pop_front();
      stopping = push_stop;
    }
    const uint64_t token = book().token(job.idx);
    job.msg.parts = &job.part;
    Status st = Status::closed;
    if (stopping)
      book().withdraw(job.idx);  // never sent
    else
      st = book().send(*job.ring, job.idx, job.msg, job.deadline, true);  // a failed send withdraws the slot
    if (st == Status::ok) {
      std::lock_guard<std::mutex> g(mu);
      if (waiting[job.idx].token == token) waiting[job.idx].pushed = true;
      continue;
    }
    std::shared_ptr<Session> s = take_waiter(job.idx, token);
    if (!s) continue;
    if (st == Status::push_timeout)
      s->respond(error_answer(504, "TimeoutError", "the request could not be queued within its timeout"));
    else
      s->respond(error_answer(503, "ServiceUnavailable", "the server is shutting down"), true);
  }
}

// ------------------------------------------------------------------ HttpFront

HttpFront::HttpFront(HttpRoutes routes, HttpFrontConfig cfg, AccessLog access) {
  impl_ = std::make_unique<Impl>(*this, std::move(routes), std::move(cfg), std::move(access));
  Impl& f = *impl_;
  const tcp::endpoint ep(asio::ip::make_address(f.cfg.host), f.cfg.port);
  f.acceptor.open(ep.protocol());
  f.acceptor.set_option(asio::socket_base::reuse_address(true));
  f.acceptor.bind(ep);
  f.acceptor.listen(asio::socket_base::max_listen_connections);
  port_ = f.acceptor.local_endpoint().port();
}

HttpFront::~HttpFront() { stop(); }

void HttpFront::attach(RequestBook& book, std::vector<Ring*> entries, Probe ready, Text metrics) {
  Impl& f = *impl_;
  if (f.book_) throw std::logic_error("HttpFront::attach: already attached");
  for (Ring* r : entries)
    if (!r) throw std::invalid_argument("HttpFront::attach: null entry ring");
  for (const HttpRoute* r : f.routes.all())
    if (r->entry >= entries.size())
      throw std::invalid_argument("HttpFront::attach: route " + r->path + " names no entry ring");
  {
    std::lock_guard<std::mutex> g(f.mu);
    f.waiting.resize(book.capacity());
  }
  f.book_ = &book;
  f.entries = std::move(entries);
  f.ready = std::move(ready);
  f.metrics = std::move(metrics);
  book.set_front(this);
  f.serving.store(true, std::memory_order_release);
}

bool HttpFront::attached() const { return impl_->serving.load(std::memory_order_acquire); }

void HttpFront::start() {
  Impl& f = *impl_;
  f.accept();
  f.sweep();
  // Quiet threads (every signal blocked): SIGINT and SIGTERM reach Python's main thread.
  f.pusher = start_quiet_thread([&f] { f.push_loop(); });
  for (unsigned i = 0; i < std::max(1u, f.cfg.threads); ++i)
    f.threads.push_back(start_quiet_thread([&f] { f.ioc.run(); }));
}

void HttpFront::completed(const std::vector<uint64_t>& tokens) {
  Impl& f = *impl_;
  {
    std::lock_guard<std::mutex> g(f.mu);
    f.done.insert(f.done.end(), tokens.begin(), tokens.end());
  }
  if (!f.done_posted.exchange(true, std::memory_order_acq_rel)) asio::post(f.ioc, [&f] { f.on_done(); });
}

uint32_t HttpFront::drain(int64_t deadline_ns) {
  if (stopped_.exchange(true)) return 0;
  Impl& f = *impl_;
  draining_.store(true, std::memory_order_release);
  const bool running = !f.threads.empty();
  if (running) {
    std::promise<void> closed;
    asio::post(f.accepting, [&f, &closed] {
      beast::error_code ec;
      f.acceptor.close(ec);
      f.backoff.cancel();
      closed.set_value();
    });
    closed.get_future().wait();
  } else {
    beast::error_code ec;
    f.acceptor.close(ec);
  }
  // In-flight requests are answered as their results come, up to the bound.
  uint32_t left = 0;
  {
    std::unique_lock<std::mutex> lk(f.mu);
    while (f.in_flight > 0 && now_ns() < deadline_ns)
      f.idle.wait_for(lk, ns(std::min<int64_t>(deadline_ns - now_ns(), 50'000'000)));
    left = f.in_flight;
  }
  // The pusher ends: what it still holds is answered 503.
  {
    std::lock_guard<std::mutex> g(f.push_mu);
    f.push_stop = true;
    f.push_cv.notify_all();
  }
  if (f.pusher.joinable()) f.pusher.join();
  f.push_loop();  // jobs queued after the pusher ended (it returns once the queue is empty)
  // Those still waiting at the bound are given up and answered.
  std::vector<std::pair<uint32_t, std::shared_ptr<Session>>> rest;
  {
    std::lock_guard<std::mutex> g(f.mu);
    for (uint32_t i = 0; i < f.waiting.size(); ++i)
      if (f.waiting[i].session) {
        const bool pushed = f.waiting[i].pushed;
        auto s = f.take_waiter_locked(i);
        if (pushed) rest.emplace_back(i, std::move(s));
      }
  }
  for (auto& [idx, s] : rest) {
    f.book().abandon(idx, Ledger::GiveUp::cancelled);  // (only an attached front has waiters)
    if (running)
      s->respond(error_answer(503, "ServiceUnavailable", "the server shut down before the result came"),
                 true);
  }
  rest.clear();
  if (f.book_) f.book().set_front(nullptr);
  if (running) {
    // Let the last responses go out, then close every connection and end the threads.
    const int64_t grace = now_ns() + 2'000'000'000;
    while (now_ns() < grace) {
      std::vector<std::shared_ptr<Session>> open;
      {
        std::lock_guard<std::mutex> g(f.sessions_mu);
        for (auto& [p, w] : f.sessions)
          if (auto s = w.lock()) open.push_back(std::move(s));
      }
      if (open.empty()) break;
      for (auto& s : open) s->shut();
      open.clear();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    f.ioc.stop();
    for (auto& t : f.threads) t.join();
    f.threads.clear();
  }
  // A request admitted while the drain began: given up, its connection is gone.
  std::vector<std::shared_ptr<Session>> gone;  // sessions die after mu is released
  {
    std::lock_guard<std::mutex> g(f.mu);
    for (uint32_t i = 0; i < f.waiting.size(); ++i)
      if (f.waiting[i].session) {
        if (f.waiting[i].pushed) f.book().abandon(i, Ledger::GiveUp::cancelled);
        gone.push_back(f.take_waiter_locked(i));
      }
  }
  return left;
}

HttpFrontCounts HttpFront::counts() const {
  Impl& f = *impl_;
  HttpFrontCounts c;
  c.accepted = f.accepted.load(std::memory_order_relaxed);
  c.requests = f.requests.load(std::memory_order_relaxed);
  c.responses = f.responses.load(std::memory_order_relaxed);
  c.rejected = f.rejected.load(std::memory_order_relaxed);
  c.timed_out = f.timed_out.load(std::memory_order_relaxed);
  c.bad = f.bad.load(std::memory_order_relaxed);
  c.refused = f.refused.load(std::memory_order_relaxed);
  c.connections = f.connections.load(std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> g(f.mu);
    c.in_flight = f.in_flight;
  }
  return c;
}

}  // namespace mps
