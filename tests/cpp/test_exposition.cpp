// Catch2 tests of the Prometheus exposition (cpp/exposition.hpp): float
// formatting as Python and prometheus_client write floats, escaping, and the
// shape of one scrape.  tests/test_exposition.py holds the whole text equal
// to the Python side's on live servers.
#include <catch2/catch.hpp>

#include <limits>
#include <string>

#include "exposition.hpp"
#include "meter.hpp"

using namespace mps;

TEST_CASE("exposition: floats as Python's repr and prometheus_client's floatToGoString") {
  CHECK(python_float_repr(0.0) == "0.0");
  CHECK(python_float_repr(3.0) == "3.0");
  CHECK(python_float_repr(2e-06) == "2e-06");
  CHECK(python_float_repr(0.0001) == "0.0001");
  CHECK(python_float_repr(1e-05) == "1e-05");
  CHECK(python_float_repr(0.1) == "0.1");
  CHECK(python_float_repr(50.0) == "50.0");
  CHECK(python_float_repr(1e15) == "1000000000000000.0");
  CHECK(python_float_repr(1e16) == "1e+16");
  CHECK(python_float_repr(1.5e-07) == "1.5e-07");
  CHECK(go_float_string(1234567.0) == "1.234567e+06");
  CHECK(go_float_string(1e6) == "1e+06");
  CHECK(go_float_string(999999.0) == "999999.0");
  CHECK(go_float_string(std::numeric_limits<double>::infinity()) == "+Inf");
  CHECK(go_float_string(std::numeric_limits<double>::quiet_NaN()) == "NaN");
}

TEST_CASE("exposition: one thread servlet, escaped labels, every family") {
  auto board = MeterBoard::create(2);
  set(board->record(0).own[kServerCapacity], 64);
  set(board->record(1).own[kWorkerIn], 5);
  ExposedServlet root;
  root.path = "0";
  root.kind = "ThreadServlet";
  root.label = "T(\"a\\b\nc\")";
  root.workers.push_back({"T-thread-0", 1});
  const std::string text = expose_metrics(*board, root, "svc");
  CHECK(text.find(
            "# HELP svc_requests_timed_out_total Requests whose caller's timeout passed before the result "
            "came.\n# TYPE svc_requests_timed_out_total counter\n") != std::string::npos);
  CHECK(text.find("svc_capacity 64.0\n") != std::string::npos);
  CHECK(text.find(
            "svc_worker_items_in_total{label=\"T(\\\"a\\\\b\\nc\\\")\",servlet=\"0\",worker=\"T-thread-0\"} "
            "5.0\n") != std::string::npos);
  CHECK(
      text.find("svc_request_latency_seconds_bucket{le=\"+Inf\"} 0.0\nsvc_request_latency_seconds_count 0.0\n"
                "svc_request_latency_seconds_sum 0.0\n") != std::string::npos);
  size_t helps = 0;
  for (size_t at = text.find("# HELP "); at != std::string::npos; at = text.find("# HELP ", at + 1)) ++helps;
  CHECK(helps == kExposedMetricCount);
  CHECK_THROWS_AS(expose_metrics(*board, root, "1bad"), std::invalid_argument);
  root.workers.push_back({"T-thread-1", 2});
  CHECK_THROWS_AS(expose_metrics(*board, root, "svc"), std::out_of_range);
}
