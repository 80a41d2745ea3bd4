#include "meter.hpp"

#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace mpb {

using namespace mps;

thread_local MeterRecord* t_meter = nullptr;

namespace {

py::tuple words(const std::vector<uint64_t>& w) {
  py::tuple t(w.size());
  for (size_t i = 0; i < w.size(); ++i) t[i] = py::int_(w[i]);
  return t;
}

}  // namespace

void define_meter(py::module_& m) {
  py::class_<PyMeterBoard, std::shared_ptr<PyMeterBoard>>(
      m, "MeterBoard", "Live counters of a server, in shared memory (cpp/meter.hpp).")
      .def_static(
          "create",
          [](uint32_t records) {
            return std::make_shared<PyMeterBoard>(PyMeterBoard{MeterBoard::create(records)});
          },
          py::arg("records"))
      .def_static(
          "attach",
          [](int fd) { return std::make_shared<PyMeterBoard>(PyMeterBoard{MeterBoard::attach(fd)}); },
          py::arg("fd"), "Maps the board behind an fd (the board takes the fd over).")
      .def_property_readonly("fd", [](PyMeterBoard& b) { return b.board->fd(); })
      .def_property_readonly("records", [](PyMeterBoard& b) { return b.board->records(); })
      .def(
          "read", [](PyMeterBoard& b, uint32_t i) { return words(b.board->read(i)); }, py::arg("record"),
          "Record `record` as a tuple of RECORD_WORDS ints: own[16], kept[8], then the sizes, waits "
          "and times histograms, each its buckets followed by its sum.")
      .def(
          "read_many",
          [](PyMeterBoard& b, const std::vector<uint32_t>& records) {
            py::list out(records.size());
            for (size_t i = 0; i < records.size(); ++i) out[i] = words(b.board->read(records[i]));
            return out;
          },
          py::arg("records"), "read() of each record, in one call.")
      .def(
          "set",
          [](PyMeterBoard& b, uint32_t i, uint32_t word, uint64_t v) {
            if (word >= 16) throw std::out_of_range("no such counter");
            set(b.board->record(i).own[word], v);
          },
          py::arg("record"), py::arg("word"), py::arg("value"),
          "Sets an own-line counter (constants such as capacity).");
  m.def(
      "bind_meter",
      [](std::shared_ptr<PyMeterBoard> b, uint32_t record, uint64_t pid) {
        t_meter = b ? &b->board->record(record) : nullptr;  // the caller keeps b alive while bound
        if (t_meter) set(t_meter->own[kWorkerPid], pid);
      },
      py::arg("board").none(true), py::arg("record") = 0, py::arg("pid") = 0,
      "Makes this thread's gather() and push() count into `record` of `board` (a worker's record).");
  m.attr("METERS") = kMetering;
  m.attr("RECORD_WORDS") = kRecordWords;
  m.attr("TIME_BOUNDS_NS") = std::vector<int64_t>(kTimeBoundsNs.begin(), kTimeBoundsNs.end());
  m.attr("SIZE_BUCKETS") = kSizeBuckets;
  m.attr("TIME_BUCKETS") = kTimeBuckets;
  py::dict counts;
  counts["worker"] = py::dict(py::arg("in_") = int(kWorkerIn), py::arg("out") = int(kWorkerOut),
                              py::arg("errors") = int(kWorkerErrors), py::arg("passed") = int(kWorkerPassed),
                              py::arg("skipped") = int(kWorkerSkipped),
                              py::arg("batches") = int(kWorkerBatches), py::arg("pid") = int(kWorkerPid));
  counts["server"] =
      py::dict(py::arg("admitted") = int(kServerAdmitted), py::arg("rejected") = int(kServerRejected),
               py::arg("timed_out") = int(kServerTimedOut), py::arg("cancelled") = int(kServerCancelled),
               py::arg("freed") = int(kServerFreed), py::arg("filed") = int(kServerFiled),
               py::arg("late") = int(kServerLate), py::arg("freed_late") = int(kServerFreedLate),
               py::arg("capacity") = int(kServerCapacity));
  counts["router"] = py::dict(py::arg("routed") = int(kRouterRouted), py::arg("joined") = int(kRouterJoined),
                              py::arg("late") = int(kRouterLate));
  counts["kept"] = py::dict(py::arg("crashes") = int(kKeptCrashes), py::arg("restarts") = int(kKeptRestarts),
                            py::arg("killed") = int(kKeptKilled));
  m.attr("METER_WORDS") = counts;
}

}  // namespace mpb
