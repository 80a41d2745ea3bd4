// http.cpp — _core.HttpFront: the native HTTP front (cpp/http_front.hpp) for
// Python.  Python builds the route table and the configuration, starts the
// front before the server's workers (so /readyz says 503 while they start),
// attaches it to the running server, and drains it before the server stops.
// Per request nothing here runs: the front's threads never take the GIL.
//
// Lifetimes: the front holds the Python objects (engine, guardian) and the
// rings, meter board and exposition tree it was attached to, so none of them
// goes away while its threads may use them; drain() (and the destructor)
// ends those threads first, with the GIL released because the collector may
// need it to finish a batch.
#include <atomic>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "../cpp/guardian.hpp"
#include "../cpp/http_front.hpp"
#include "../cpp/wire.hpp"
#include "exposition.hpp"
#include "meter.hpp"
#include "module.hpp"
#include "owned.hpp"
#include "ring.hpp"

namespace mpb {

using namespace mps;

namespace {

int64_t seconds_ns(double s, const char* what) {
  if (!(s > 0)) throw py::value_error(std::string(what) + " must be a number of seconds > 0");
  return s > 1e9 ? kForever / 4 : int64_t(s * 1e9);
}

class PyHttpFront {
 public:
  PyHttpFront(const std::vector<std::tuple<std::string, uint32_t, bool>>& routes, const std::string& host,
              int port, unsigned threads, uint64_t max_body, uint32_t max_header, double timeout,
              double read_timeout, double idle_timeout, uint32_t max_connections, uint32_t retry_after) {
    if (port < 0 || port > 65535) throw py::value_error("port must be in 0..65535");
    if (threads < 1 || threads > 64) throw py::value_error("threads must be in 1..64");
    if (max_header < 1024) throw py::value_error("max_header must be at least 1024 bytes");
    HttpRoutes table;
    for (const auto& [path, entry, whole] : routes) {
      try {
        table.add(HttpRoute{path, entry, whole});
      } catch (const std::invalid_argument& e) {
        throw py::value_error(e.what());
      }
    }
    HttpFrontConfig cfg;
    cfg.host = host;
    cfg.port = uint16_t(port);
    cfg.threads = threads;
    cfg.max_body = max_body;
    cfg.max_header = max_header;
    cfg.timeout_ns = seconds_ns(timeout, "timeout");
    cfg.read_timeout_ns = seconds_ns(read_timeout, "read_timeout");
    cfg.idle_timeout_ns = seconds_ns(idle_timeout, "idle_timeout");
    cfg.max_connections = max_connections;
    cfg.retry_after = retry_after;
    auto access = [this](std::string_view line) {
      Ring* r = access_.load(std::memory_order_acquire);
      if (!r) return;
      Slice part{line.data(), line.size()};
      OutMessage m{0, kFlagControl, uint64_t(Control::access), &part, 1};
      (void)r->try_push(&m, 1);  // a full control ring drops the line: the front never waits for logging
    };
    try {
      front_ = make_process_local<HttpFront>(std::move(table), cfg, access);
    } catch (const std::runtime_error& e) {  // std::system_error and Boost's
      throw py::value_error("cannot listen on " + host + ":" + std::to_string(port) + ": " + e.what());
    }
  }

  ~PyHttpFront() {
    if (!owned_here(front_)) return;  // a forked child's copy: leaked (its threads are the parent's)
    py::gil_scoped_release nogil;
    front_.reset();
  }

  // Every use goes through here: a forked child gets a clear error (owned.hpp).
  HttpFront& front() const { return owned(front_, "HTTP front"); }
  uint16_t port() const { return front().port(); }
  void start() { front().start(); }

  void attach(py::object engine, std::vector<std::shared_ptr<PyRing>> entries, py::object guardian,
              std::shared_ptr<PyMeterBoard> meter, py::object layout, const std::string& prefix,
              std::shared_ptr<PyRing> access_log) {
    RequestBook& book = request_book_of(engine);
    Guardian* g = guardian.is_none() ? nullptr : &guardian_of(guardian);
    std::vector<Ring*> rings;
    for (const auto& r : entries) {
      if (!r) throw py::type_error("entries must be rings");
      rings.push_back(r->ring.get());
    }
    HttpFront::Text text;
    if (meter && !layout.is_none()) {
      tree_ = std::make_shared<ExposedTree>(exposed_tree(layout));
      text = [board = meter, tree = tree_, prefix] {
        return expose_metrics(*board->board, tree->root, prefix);
      };
    }
    HttpFront::Probe probe;
    if (g) probe = [g] { return g->serving(); };
    engine_ = std::move(engine);
    guardian_ = std::move(guardian);
    entries_ = std::move(entries);
    meter_ = std::move(meter);
    access_ring_ = std::move(access_log);
    try {
      front().attach(book, std::move(rings), std::move(probe), std::move(text));
    } catch (const std::exception& e) {
      throw py::value_error(e.what());
    }
    if (access_ring_) access_.store(access_ring_->ring.get(), std::memory_order_release);
  }

  uint32_t drain(double timeout) {
    const int64_t deadline = timeout > 0 ? now_ns() + int64_t(std::min(timeout, 1e6) * 1e9) : 0;
    HttpFront& f = front();  // with the GIL: it may raise
    uint32_t left = 0;
    {
      py::gil_scoped_release nogil;
      left = f.drain(deadline);
    }
    access_.store(nullptr, std::memory_order_release);
    return left;
  }

  py::dict counts() const {
    HttpFrontCounts c = front().counts();
    py::dict d;
    d["accepted"] = c.accepted;
    d["requests"] = c.requests;
    d["responses"] = c.responses;
    d["rejected"] = c.rejected;
    d["timed_out"] = c.timed_out;
    d["bad"] = c.bad;
    d["refused"] = c.refused;
    d["connections"] = c.connections;
    d["in_flight"] = c.in_flight;
    return d;
  }

  bool draining() const { return front().draining(); }
  bool attached() const { return front().attached(); }

 private:
  ProcessLocal<HttpFront> front_;
  std::atomic<Ring*> access_{nullptr};
  py::object engine_, guardian_;
  std::vector<std::shared_ptr<PyRing>> entries_;
  std::shared_ptr<PyMeterBoard> meter_;
  std::shared_ptr<ExposedTree> tree_;
  std::shared_ptr<PyRing> access_ring_;
};

// Test and fuzz entry points of the translation layer (cpp/http_message.hpp).
py::bytes encode_request_record(const std::string& method, const std::string& path, const std::string& query,
                                const std::vector<std::pair<std::string, std::string>>& headers,
                                const std::string& body) {
  HttpRequestView v{method, path, query, {}, body};
  for (const auto& [n, val] : headers) v.headers.emplace_back(n, val);
  std::string out;
  encode_request(v, &out);
  return py::bytes(out);
}

py::object decode_request_record(const py::bytes& rec) {
  const std::string s(rec);
  auto v = decode_request(s);
  if (!v) return py::none();
  py::list headers;
  for (const auto& [n, val] : v->headers)
    headers.append(py::make_tuple(py::bytes(n.data(), n.size()), py::bytes(val.data(), val.size())));
  return py::make_tuple(
      py::bytes(v->method.data(), v->method.size()), py::bytes(v->path.data(), v->path.size()),
      py::bytes(v->query.data(), v->query.size()), headers, py::bytes(v->body.data(), v->body.size()));
}

py::tuple http_answer(uint32_t flags, const py::bytes& payload) {
  HttpAnswer a = answer_for(flags, std::string(payload));
  return py::make_tuple(a.status, std::string(a.content_type), py::bytes(a.body));
}

}  // namespace

void define_http(py::module_& m) {
  py::class_<PyHttpFront>(m, "HttpFront", "The native HTTP/1.1 front of a server (cpp/http_front.hpp).")
      .def(py::init<const std::vector<std::tuple<std::string, uint32_t, bool>>&, const std::string&, int,
                    unsigned, uint64_t, uint32_t, double, double, double, uint32_t, uint32_t>(),
           py::arg("routes"), py::arg("host"), py::arg("port"), py::arg("threads"), py::arg("max_body"),
           py::arg("max_header"), py::arg("timeout"), py::arg("read_timeout"), py::arg("idle_timeout"),
           py::arg("max_connections"), py::arg("retry_after"),
           "Binds and listens.  routes: [(path, entry index, whole request?)].  ValueError if it cannot "
           "listen.")
      .def_property_readonly("port", &PyHttpFront::port, "The port it listens on.")
      .def("start", &PyHttpFront::start, "Starts the I/O threads (routes answer 503 until attach()).")
      .def("attach", &PyHttpFront::attach, py::arg("engine"), py::arg("entries"), py::arg("guardian"),
           py::arg("meter"), py::arg("layout"), py::arg("prefix"), py::arg("access_log"),
           "Serves the running server: its RequestBook, an entry ring per route index, its Guardian "
           "(readiness), "
           "meter board and layout (GET /metrics), and the control ring for access-log lines (or None).")
      .def("drain", &PyHttpFront::drain, py::arg("timeout"),
           "Stops accepting, answers in-flight requests for up to `timeout` seconds, then stops; returns how "
           "many were still waiting then.")
      .def("counts", &PyHttpFront::counts, "Connections and requests so far (a dict).")
      .def_property_readonly("draining", &PyHttpFront::draining)
      .def_property_readonly("attached", &PyHttpFront::attached);
  m.def("encode_request_record", &encode_request_record, py::arg("method"), py::arg("path"), py::arg("query"),
        py::arg("headers"), py::arg("body"), "The kFlagRequest payload the front makes (for tests).");
  m.def("decode_request_record", &decode_request_record, py::arg("record"),
        "(method, path, query, [(name, value)], body) of a request record, or None (for tests and fuzzing).");
  m.def("http_answer", &http_answer, py::arg("flags"), py::arg("payload"),
        "(status, content type, body) the front answers for a result (for tests and fuzzing).");
}

}  // namespace mpb
