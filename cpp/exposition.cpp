#include "exposition.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <unordered_map>
#include <utility>

namespace mps {

namespace {

// Where read() puts a record's parts (meter.hpp: own, kept, then each
// histogram's buckets followed by its sum) — as python/mpserver/_stats.py.
constexpr size_t kKeptAt = 16;
constexpr size_t kSizesAt = 24;
constexpr size_t kWaitsAt = kSizesAt + kSizeBuckets + 1;
constexpr size_t kTimesAt = kWaitsAt + kTimeBuckets + 1;
static_assert(kTimesAt + kTimeBuckets + 1 == kRecordWords, "record layout out of step with meter.hpp");

uint64_t minus(uint64_t a, uint64_t b) { return a > b ? a - b : 0; }  // max(0, a - b)

struct WorkerNumbers {
  const ExposedWorker* layout;
  const uint64_t* words;  // kRecordWords
};

// One servlet's numbers, as _stats.ServletStats.
struct ServletNumbers {
  const ExposedServlet* layout = nullptr;
  uint64_t depth = 0, bytes = 0, in = 0, out = 0, errors = 0, crashes = 0, restarts = 0;
  bool ensemble = false;  // ServletStats.joined is not None
  uint64_t routed = 0, joined = 0, late = 0;
  std::vector<uint64_t> routed_to;  // a switch: per member
  std::vector<WorkerNumbers> workers;
  std::vector<ServletNumbers> children;
};

using Records = std::unordered_map<uint32_t, std::vector<uint64_t>>;

uint64_t worker_errors(const uint64_t* w) { return minus(w[kWorkerErrors], w[kWorkerPassed]); }

// _stats._entry_ring_pushed: messages ever pushed where s takes its input.
uint64_t entry_ring_pushed(const ExposedServlet* s) {
  while (s->ring == nullptr && !s->children.empty()) s = &s->children.front();
  return s->ring != nullptr ? s->ring->pushed() : 0;
}

// _stats._servlet.
ServletNumbers derive(const ExposedServlet& lay, const Records& records) {
  ServletNumbers n;
  n.layout = &lay;
  for (const ExposedServlet& c : lay.children) n.children.push_back(derive(c, records));
  for (const ExposedWorker& w : lay.workers) n.workers.push_back({&w, records.at(w.record).data()});
  if (lay.ring != nullptr) {
    n.depth = lay.ring->depth();
    n.bytes = lay.ring->bytes_used();
  }
  for (const WorkerNumbers& w : n.workers) {
    n.crashes += w.words[kKeptAt + kKeptCrashes];
    n.restarts += w.words[kKeptAt + kKeptRestarts];
  }
  uint64_t member_errors = 0;
  for (const ServletNumbers& c : n.children) {
    n.crashes += c.crashes;
    n.restarts += c.restarts;
    member_errors += c.errors;
  }
  if (!n.workers.empty() || n.children.empty()) {
    for (const WorkerNumbers& w : n.workers) {
      n.in += w.words[kWorkerIn];
      n.out += w.words[kWorkerOut];
      n.errors += worker_errors(w.words);
    }
  } else if (lay.router >= 0) {  // an ensemble: counted at its router
    const uint64_t* r = records.at(uint32_t(lay.router)).data();
    n.ensemble = true;
    n.routed = r[kRouterRouted];
    n.joined = r[kRouterJoined];
    n.late = r[kRouterLate];
    n.in = n.routed;
    n.out = n.joined;
    n.errors = member_errors;
  } else if (lay.ring != nullptr) {  // a switch: what it pushed into each member's input
    for (const ExposedServlet& c : lay.children) n.routed_to.push_back(entry_ring_pushed(&c));
    for (uint64_t k : n.routed_to) n.in += k;
    for (const ServletNumbers& c : n.children) n.out += c.out;
    n.errors = member_errors;
    n.routed = n.in;
  } else {  // a sequence
    n.in = n.children.front().in;
    n.out = n.children.back().out;
    n.errors = member_errors;
    n.depth = n.children.front().depth;
    n.bytes = n.children.front().bytes;
  }
  return n;
}

void walk(const ServletNumbers& n, std::vector<const ServletNumbers*>& out) {
  out.push_back(&n);
  for (const ServletNumbers& c : n.children) walk(c, out);
}

// Every record the tree names exists on the board (_stats.Layout.records order).
void check_records(const ExposedServlet& s, uint32_t records, std::vector<uint32_t>& out) {
  auto need = [&](int64_t r) {
    if (r < 0 || r >= int64_t(records))
      throw std::out_of_range("servlet " + s.path + " (" + s.label + "): meter record " + std::to_string(r) +
                              " is not on the board (" + std::to_string(records) + " records)");
    out.push_back(uint32_t(r));
  };
  for (const ExposedWorker& w : s.workers) need(w.record);
  if (s.router != -1) need(s.router);
  for (const ExposedServlet& c : s.children) check_records(c, records, out);
}

// What one sample is about (metrics._samples): the scope's object.
struct Subject {
  const uint64_t* server = nullptr;  // record 0
  const ServletNumbers* servlet = nullptr;
  const uint64_t* worker = nullptr;
  uint64_t routed = 0;  // a switch member's
};

// A sample's value: a number, or a histogram (`counts` buckets then the sum).
struct Value {
  double number = 0;
  const uint64_t* counts = nullptr;
  size_t buckets = 0;
  bool seconds = false;
};

Value num(uint64_t v) { return {double(v)}; }
Value times(const uint64_t* w, size_t at) { return {0, w + at, kTimeBuckets, true}; }
Value sizes(const uint64_t* w) { return {0, w + kSizesAt, kSizeBuckets, false}; }

struct Row {
  ExposedMetric metric;
  Value (*value)(const Subject&);
};

// python/mpserver/metrics.py's METRICS, in its order (tests/test_exposition.py
// holds the two equal).
constexpr std::array<Row, kExposedMetricCount> kRows = {{
    {{"requests_admitted_total", "counter", "server", "Requests that got into the backlog."},
     [](const Subject& s) { return num(s.server[kServerAdmitted]); }},
    {{"requests_rejected_total", "counter", "server", "Requests refused with ServerBacklogFull."},
     [](const Subject& s) { return num(s.server[kServerRejected]); }},
    {{"requests_timed_out_total", "counter", "server",
      "Requests whose caller's timeout passed before the result came."},
     [](const Subject& s) { return num(s.server[kServerTimedOut]); }},
    {{"requests_cancelled_total", "counter", "server",
      "Requests given up otherwise (asyncio task cancelled, stream left early, Ctrl-C)."},
     [](const Subject& s) { return num(s.server[kServerCancelled]); }},
    {{"requests_completed_total", "counter", "server", "Results delivered to a waiting caller."},
     [](const Subject& s) { return num(s.server[kServerFiled]); }},
    {{"requests_late_total", "counter", "server", "Results that came after their caller had given up."},
     [](const Subject& s) { return num(s.server[kServerLate]); }},
    {{"backlog", "gauge", "server", "Requests admitted and not yet finished."},
     [](const Subject& s) {
       return num(minus(s.server[kServerAdmitted], s.server[kServerFreed] + s.server[kServerFreedLate]));
     }},
    {{"capacity", "gauge", "server", "Most requests the server holds at once."},
     [](const Subject& s) { return num(s.server[kServerCapacity]); }},
    {{"request_latency_seconds", "histogram", "server",
      "Seconds from a request's admission to its result's arrival."},
     [](const Subject& s) { return times(s.server, kTimesAt); }},
    {{"servlet_queue_depth", "gauge", "servlet",
      "Items waiting in the servlet's input queue (a sequence: its first stage's)."},
     [](const Subject& s) { return num(s.servlet->depth); }},
    {{"servlet_queue_bytes", "gauge", "servlet", "Bytes those items take in the queue."},
     [](const Subject& s) { return num(s.servlet->bytes); }},
    {{"servlet_items_in_total", "counter", "servlet", "Items the servlet took in."},
     [](const Subject& s) { return num(s.servlet->in); }},
    {{"servlet_items_out_total", "counter", "servlet", "Results and errors the servlet put out."},
     [](const Subject& s) { return num(s.servlet->out); }},
    {{"servlet_errors_total", "counter", "servlet", "Errors the servlet's workers produced."},
     [](const Subject& s) { return num(s.servlet->errors); }},
    {{"servlet_in_flight", "gauge", "servlet", "Items taken in and not yet put out."},
     [](const Subject& s) { return num(minus(s.servlet->in, s.servlet->out)); }},
    {{"worker_items_in_total", "counter", "worker", "Items the worker took off its input queue."},
     [](const Subject& s) { return num(s.worker[kWorkerIn]); }},
    {{"worker_items_out_total", "counter", "worker", "Results and errors the worker pushed on."},
     [](const Subject& s) { return num(s.worker[kWorkerOut]); }},
    {{"worker_errors_total", "counter", "worker", "Errors of the worker's own calls."},
     [](const Subject& s) { return num(worker_errors(s.worker)); }},
    {{"worker_passed_total", "counter", "worker", "Upstream errors the worker passed on untouched."},
     [](const Subject& s) { return num(s.worker[kWorkerPassed]); }},
    {{"worker_skipped_total", "counter", "worker",
      "Items not run because their caller had already given up."},
     [](const Subject& s) { return num(s.worker[kWorkerSkipped]); }},
    {{"worker_batches_total", "counter", "worker", "Calls into user code (one item or one batch)."},
     [](const Subject& s) { return num(s.worker[kWorkerBatches]); }},
    {{"worker_crashes_total", "counter", "worker", "Deaths of the worker while serving."},
     [](const Subject& s) { return num(s.worker[kKeptAt + kKeptCrashes]); }},
    {{"worker_restarts_total", "counter", "worker", "Replacements started after a crash."},
     [](const Subject& s) { return num(s.worker[kKeptAt + kKeptRestarts]); }},
    {{"worker_item_timeout_kills_total", "counter", "worker",
      "Kills by the item_timeout watchdog (each is also a crash)."},
     [](const Subject& s) { return num(s.worker[kKeptAt + kKeptKilled]); }},
    {{"worker_in_flight", "gauge", "worker", "Items the worker holds now."},
     [](const Subject& s) { return num(minus(s.worker[kWorkerIn], s.worker[kWorkerOut])); }},
    {{"worker_batch_size_items", "histogram", "worker", "Items per call into user code."},
     [](const Subject& s) { return sizes(s.worker); }},
    {{"worker_queue_wait_seconds", "histogram", "worker",
      "Seconds an item waited in the input queue before the worker took it."},
     [](const Subject& s) { return times(s.worker, kWaitsAt); }},
    {{"worker_service_time_seconds", "histogram", "worker",
      "Seconds from taking an item to pushing its result (a batch's items count the batch's time)."},
     [](const Subject& s) { return times(s.worker, kTimesAt); }},
    {{"ensemble_routed_total", "counter", "ensemble", "Items an ensemble fanned out to its members."},
     [](const Subject& s) { return num(s.servlet->routed); }},
    {{"ensemble_joined_total", "counter", "ensemble",
      "Results an ensemble assembled from its members' results."},
     [](const Subject& s) { return num(s.servlet->joined); }},
    {{"ensemble_late_total", "counter", "ensemble",
      "Member results that came after their item's result was sent (fail_fast)."},
     [](const Subject& s) { return num(s.servlet->late); }},
    {{"switch_routed_total", "counter", "switch", "Items a switch routed to each member."},
     [](const Subject& s) { return num(s.routed); }},
}};

constexpr std::array<ExposedMetric, kExposedMetricCount> metrics_of(
    const std::array<Row, kExposedMetricCount>& rows) {
  std::array<ExposedMetric, kExposedMetricCount> out{};
  for (size_t i = 0; i < rows.size(); ++i) out[i] = rows[i].metric;
  return out;
}

// Label values and HELP text, escaped as prometheus_client does.
void escape_into(std::string& out, std::string_view s, bool quote) {
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && quote) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
}

using Label = std::pair<std::string_view, std::string_view>;

// One sample line; label names sorted, as generate_latest() writes them.
void sample(std::string& out, std::string_view name, std::string_view suffix, std::vector<Label> labels,
            double value) {
  out += name;
  out += suffix;
  if (!labels.empty()) {
    std::sort(labels.begin(), labels.end());
    out += '{';
    for (size_t i = 0; i < labels.size(); ++i) {
      if (i) out += ',';
      out += labels[i].first;
      out += "=\"";
      escape_into(out, labels[i].second, true);
      out += '"';
    }
    out += '}';
  }
  out += ' ';
  out += go_float_string(value);
  out += '\n';
}

// The le labels of the time and size buckets (metrics._le: repr of the bound).
struct Bounds {
  std::array<std::string, kTimeBuckets> time;
  std::array<std::string, kSizeBuckets> size;
  Bounds() {
    for (size_t i = 0; i < kTimeBoundsNs.size(); ++i)
      time[i] = python_float_repr(double(kTimeBoundsNs[i]) / 1e9);
    for (size_t i = 0; i < kSizeBounds; ++i) size[i] = python_float_repr(double(uint64_t(1) << i));
    time.back() = size.back() = "+Inf";
  }
};

void write(std::string& out, std::string_view name, const std::vector<Label>& labels, const Value& v) {
  if (v.counts == nullptr) {
    sample(out, name, "", labels, v.number);
    return;
  }
  static const Bounds bounds;
  const std::string* le = v.seconds ? bounds.time.data() : bounds.size.data();
  uint64_t acc = 0;
  for (size_t i = 0; i < v.buckets; ++i) {
    acc += v.counts[i];
    std::vector<Label> with = labels;
    with.emplace_back("le", le[i]);
    sample(out, name, "_bucket", std::move(with), double(acc));
  }
  sample(out, name, "_count", labels, double(acc));
  sample(out, name, "_sum", labels, double(v.counts[v.buckets]) * (v.seconds ? 1e-9 : 1.0));
}

}  // namespace

const std::array<ExposedMetric, kExposedMetricCount> kExposedMetrics = metrics_of(kRows);

bool valid_metric_prefix(std::string_view prefix) {
  auto first = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
  };
  if (prefix.empty() || !first(prefix[0])) return false;
  return std::all_of(prefix.begin() + 1, prefix.end(),
                     [&](char c) { return first(c) || (c >= '0' && c <= '9'); });
}

std::string expose_metrics(const MeterBoard& board, const ExposedServlet& root, std::string_view prefix) {
  if (!valid_metric_prefix(prefix))
    throw std::invalid_argument("prefix must be a Prometheus metric name, got '" + std::string(prefix) + "'");
  // Every record once: the server's, then the tree's (as _stats.snapshot).
  std::vector<uint32_t> wanted{0};
  check_records(root, board.records(), wanted);
  Records records;
  for (uint32_t r : wanted)
    if (!records.count(r)) records.emplace(r, board.read(r));
  const ServletNumbers tree = derive(root, records);
  std::vector<const ServletNumbers*> servlets;
  walk(tree, servlets);

  std::string out;
  out.reserve(4096 + 8192 * servlets.size());
  std::string name;
  for (const Row& row : kRows) {
    const ExposedMetric& m = row.metric;
    name.assign(prefix);
    name += '_';
    name += m.name;
    out += "# HELP ";
    out += name;
    out += ' ';
    escape_into(out, m.help, false);
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += m.type;
    out += '\n';
    Subject at;
    at.server = records.at(0).data();
    if (m.scope == "server") {
      write(out, name, {}, row.value(at));
      continue;
    }
    for (const ServletNumbers* s : servlets) {
      at.servlet = s;
      const ExposedServlet& lay = *s->layout;
      const std::vector<Label> labels{{"servlet", lay.path}, {"label", lay.label}};
      if (m.scope == "servlet" || (m.scope == "ensemble" && s->ensemble)) {
        write(out, name, labels, row.value(at));
      } else if (m.scope == "worker") {
        for (const WorkerNumbers& w : s->workers) {
          at.worker = w.words;
          std::vector<Label> with = labels;
          with.emplace_back("worker", w.layout->name);
          write(out, name, with, row.value(at));
        }
      } else if (m.scope == "switch") {
        for (size_t i = 0; i < s->routed_to.size(); ++i) {
          at.routed = s->routed_to[i];
          std::vector<Label> with = labels;
          with.emplace_back("member", lay.children[i].path);
          write(out, name, with, row.value(at));
        }
      }
    }
  }
  return out;
}

std::string python_float_repr(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  // The shortest digits that read back as v (what repr() prints too), in
  // scientific form: [-]d[.ddd]e(+|-)XX.
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  const std::string_view sci(buf, size_t(r.ptr - buf));
  const size_t e = sci.find('e');
  std::string out = sci[0] == '-' ? "-" : "";
  std::string digits;
  for (char c : sci.substr(0, e))
    if (c >= '0' && c <= '9') digits += c;
  int exp = 0;
  std::from_chars(sci.data() + e + (sci[e + 1] == '+' ? 2 : 1), sci.data() + sci.size(), exp);
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  const int point = exp + 1;  // v = 0.<digits> * 10^point
  const int n = int(digits.size());
  if (point > -4 && point <= 16) {  // repr's fixed notation
    if (point <= 0) {
      out += "0.";
      out.append(size_t(-point), '0');
      out += digits;
    } else if (point >= n) {
      out += digits;
      out.append(size_t(point - n), '0');
      out += ".0";
    } else {
      out += digits.substr(0, size_t(point));
      out += '.';
      out += digits.substr(size_t(point));
    }
    return out;
  }
  out += digits[0];
  if (n > 1) {
    out += '.';
    out += digits.substr(1);
  }
  const int x = point - 1;
  out += x < 0 ? "e-" : "e+";
  if (std::abs(x) < 10) out += '0';
  out += std::to_string(std::abs(x));
  return out;
}

std::string go_float_string(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  std::string s = python_float_repr(v);
  // floatToGoString: Go switches to an exponent sooner than Python.
  const size_t dot = s.find('.');
  if (v > 0 && dot != std::string::npos && dot > 6) {
    std::string mantissa = s.substr(0, 1) + "." + s.substr(1, dot - 1) + s.substr(dot + 1);
    while (!mantissa.empty() && (mantissa.back() == '0' || mantissa.back() == '.')) mantissa.pop_back();
    const size_t x = dot - 1;
    return mantissa + (x < 10 ? "e+0" : "e+") + std::to_string(x);
  }
  return s;
}

}  // namespace mps
