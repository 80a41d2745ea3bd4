// exposition.hpp — the Prometheus text exposition (format 0.0.4) of a running
// server's meters, written in C++ so that a native HTTP front can answer
// GET /metrics without running Python.
//
// The servlet tree is described once, at start, as an ExposedServlet tree
// (the C++ twin of python/mpserver/_stats.py's Layout: which meter records
// and which input ring belong to which servlet and worker).  expose_metrics()
// reads every record the tree names once (record 0 is the server's request
// book), derives each servlet's numbers with the rules of _stats._servlet()
// and writes the metrics of kExposedMetrics, in that order:
//
//   * a servlet with workers (or with neither workers nor members) counts
//     what its workers count; a worker's errors are errors - passed;
//   * an ensemble (router >= 0, no workers) counts at its router: in = routed,
//     out = joined;
//   * a switch (a ring, members, no router) takes in what it pushed into each
//     member's entry ring (a sequence member: its first stage's ring);
//   * a sequence (no ring) takes in what its first stage takes and puts out
//     what its last stage puts out; its queue is its first stage's;
//   * crashes and restarts of a compound servlet are its members' sums;
//   * backlog = admitted - freed - freed_late; in flight = in - out; all
//     three differences are clamped at 0.
//
// The text is byte for byte what python/mpserver/metrics.py's
// families(snapshot, prefix) give when written by prometheus_client's
// generate_latest(): HELP and TYPE lines for every family (also one without
// samples), label names sorted, histograms as cumulative _bucket samples
// (le as Python's repr of the bound, "+Inf" last) then _count and _sum,
// every value a float as prometheus_client writes it (3.0, 2e-06,
// 1.234567e+06).  tests/test_exposition.py holds the two equal, and holds
// kExposedMetrics equal to metrics.METRICS (names, types, scopes, help).
//
// Invariants
//   * The tree is read-only here; every Ring it points to, and the board,
//     outlive the call (the caller's holder keeps them: see
//     bindings/exposition.hpp).
//   * Each meter record is read once per call, so the numbers derived from
//     one record (a worker's in, out and histograms) come from one copy.
//   * Nothing is allocated on, or written to, the data path: a scrape costs
//     the reader only.
//
// Memory ordering: every counter and ring count is a relaxed load of a live
// value (meter.hpp, ring.hpp).  Records are copied one after the other, so
// two records (and a ring's depth next to them) may be from slightly
// different instants; the clamps above keep a difference from going
// negative while a record is being updated.  Nothing is published or
// decided through these numbers, so no stronger ordering is needed.
//
// With -DMPSERVER_METERS=0 the counters stay 0 and the exposition is still
// complete (ring counts are not meters).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "meter.hpp"
#include "ring.hpp"

namespace mps {

struct ExposedWorker {
  std::string name;  // the worker's process or thread name, e.g. Square-process-0
  uint32_t record = 0;
};

struct ExposedServlet {
  std::string path;                      // "0", "0.1", ... (_stats.Layout.path)
  std::string kind;                      // the servlet's class name
  std::string label;                     // how errors name the servlet, e.g. ProcessServlet(Square)
  const Ring* ring = nullptr;            // the servlet's input ring (null for a sequence)
  std::vector<ExposedWorker> workers;    // in worker order
  int64_t router = -1;                   // an ensemble's meter record, or -1
  std::vector<ExposedServlet> children;  // in member order
};

// One row of the metrics table (python/mpserver/metrics.py's METRICS): the
// name without the prefix, "counter" | "gauge" | "histogram", the scope
// ("server" | "servlet" | "worker" | "ensemble" | "switch") and the HELP text.
struct ExposedMetric {
  std::string_view name, type, scope, help;
};
inline constexpr size_t kExposedMetricCount = 32;
extern const std::array<ExposedMetric, kExposedMetricCount> kExposedMetrics;

// True if `prefix` is a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*),
// as metrics.Collector requires.
[[nodiscard]] bool valid_metric_prefix(std::string_view prefix);

// The exposition of one snapshot of `board` and the tree `root` describes,
// every metric named `<prefix>_<name>`.  Throws std::invalid_argument for a
// bad prefix, std::out_of_range for a record not on the board (naming the
// servlet).
[[nodiscard]] std::string expose_metrics(const MeterBoard& board, const ExposedServlet& root,
                                         std::string_view prefix = "mpserver");

// A double as Python's repr() writes it (shortest round trip: 1.0, 2e-06,
// 1e+16, 0.0001), and as prometheus_client's floatToGoString() does
// (+Inf, NaN, and 1.234567e+06 for values of 1e6 up to 1e16).
[[nodiscard]] std::string python_float_repr(double v);
[[nodiscard]] std::string go_float_string(double v);

}  // namespace mps
