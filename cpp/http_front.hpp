// http_front.hpp — the native HTTP/1.1 front of a server: C++ threads of the
// main process that accept connections, parse requests (Boost.Beast), send
// each request's body (or request record) into its route's entry ring under
// a ledger token, and write the response straight from the ledger slot the
// collector filled.  No Python runs per request.
//
// A request's life
//   read (Beast parser, bounded header and body, read timeout)
//   -> route (http_message.hpp) -> admit a ledger slot (Notify::front; full:
//   503 + Retry-After) -> register the waiter, push into the entry ring
//   (try_push on the I/O thread; if the ring has no room now, or the message
//   needs several frames, the pusher thread does a blocking push) -> the
//   collector files the result and calls completed() -> the I/O thread takes
//   the result from the slot and writes the response (answer_for).
//   A request whose deadline passes is given up (the slot is abandoned: its
//   result is dropped on arrival) and answered 504; the sweep timer checks
//   deadlines every `sweep` interval.
//
// Starting: the front binds and serves before the server's workers are up
// (so /readyz can say 503 while they start); requests for routes are
// answered 503 with Retry-After until attach() hands it the request book
// and the entry rings.
//
// Operations: GET /healthz (200 while the process serves), GET /readyz (200
// only while not draining and the readiness probe says every servlet has a
// live worker), GET /metrics (the metrics callback's text; Prometheus text
// made in C++, exposition.hpp).
//
// Draining (drain()): stop accepting, /readyz 503, every later request on an
// open connection is answered 503 with Connection: close; in-flight requests
// are answered as their results come, until none is left or the bound
// passes; those still waiting then are given up and answered 503.  Then
// every connection is closed and the I/O threads end.
//
// Invariants
//   * Every request that was read gets exactly one response, or its
//     connection is closed because the client broke the protocol or went
//     away (a truncated or oversized request gets 400/413/431 first when the
//     connection can still carry one).
//   * A waiter entry (slot -> session, token) exists from just before the
//     push until the response is decided (result, timeout or drain); whoever
//     erases it under mu_ answers the request, so a result racing a timeout
//     is answered once.  A completion whose token no longer matches is
//     ignored (the ledger dropped or recycled that slot).
//   * One connection has at most one request in flight (no pipelining: the
//     next request is read after the response is written).
//   * connections() never exceeds max_connections: further accepted sockets
//     are closed at once.
//
// Threading and memory ordering: the I/O threads (and the pusher) are quiet
// threads (quiet_thread.hpp: every signal blocked, so SIGTERM reaches the
// embedding's main thread) that run the io_context; with several I/O
// threads each session's handlers run on its strand, and the acceptor's on
// a strand of its own.  completed() runs on the collector
// thread: it appends tokens to `done_` under mu_ and posts one drain to the
// io_context if none is pending (an atomic flag, exchanged acq_rel).  The
// waiter table and the session set are guarded by mu_; counters are relaxed
// atomics read for monitoring.  The ledger orders the result itself (its
// slot is read after the acquire of `done`, ledger.hpp).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "completion_queue.hpp"
#include "http_message.hpp"
#include "requests.hpp"
#include "ring.hpp"

namespace mps {

struct HttpFrontConfig {
  std::string host = "127.0.0.1";
  uint16_t port = 8000;                      // 0: any free port (see HttpFront::port())
  unsigned threads = 1;                      // I/O threads
  uint64_t max_body = 16 << 20;              // bytes; larger: 413
  uint32_t max_header = 16 << 10;            // bytes of the request line and headers; larger: 431
  int64_t timeout_ns = 60'000'000'000;       // a request's deadline from its admission (504 after)
  int64_t read_timeout_ns = 30'000'000'000;  // to read one request once it started (slow clients)
  int64_t idle_timeout_ns = 75'000'000'000;  // a keep-alive connection with no request
  uint32_t max_connections = 10000;
  uint32_t retry_after = 1;       // seconds, on 503 for a full backlog
  int64_t sweep_ns = 20'000'000;  // how often deadlines are checked
  bool wait_for_slot = false;     // backlog full: wait (up to the deadline) instead of 503
};

struct HttpFrontCounts {
  uint64_t accepted = 0, requests = 0, responses = 0, rejected = 0, timed_out = 0, bad = 0, refused = 0;
  uint32_t connections = 0, in_flight = 0;
};

class HttpFront : public CompletionListener {
 public:
  using Probe = std::function<bool()>;
  using Text = std::function<std::string()>;
  // An access-log line per response (method, target, status, seconds); may be
  // null.  Called on an I/O thread: must not block.
  using AccessLog = std::function<void(std::string_view line)>;

  // Binds and listens (throws std::system_error if it cannot); serves after
  // start().
  HttpFront(HttpRoutes routes, HttpFrontConfig cfg, AccessLog access = nullptr);
  ~HttpFront() override;
  HttpFront(const HttpFront&) = delete;
  HttpFront& operator=(const HttpFront&) = delete;

  uint16_t port() const { return port_; }
  void start();
  // The server runs: requests go to `book`, route r into `entries[r.entry]`
  // (std::invalid_argument if a route names no entry).  The front becomes the
  // book's listener; drain() undoes that.  The book, the rings and whatever
  // the callbacks use must stay alive until drain() returned.  Once only.
  void attach(RequestBook& book, std::vector<Ring*> entries, Probe ready, Text metrics);
  bool attached() const;
  // Drains (see above) with a bound, then stops.  Idempotent; returns the
  // number of requests that were still waiting at the bound.
  uint32_t drain(int64_t deadline_ns);
  // Stops at once: in-flight requests get 503, connections close.
  void stop() { drain(0); }
  bool draining() const { return draining_.load(std::memory_order_acquire); }
  HttpFrontCounts counts() const;

  void completed(const std::vector<uint64_t>& tokens) override;

  class Session;  // one connection (http_front.cpp)
  struct Impl;    // the Asio state (http_front.cpp), so this header stays free of Asio

 private:
  friend class Session;

  std::unique_ptr<Impl> impl_;
  uint16_t port_ = 0;
  std::atomic<bool> draining_{false};
  std::atomic<bool> stopped_{false};
};

}  // namespace mps
