// routers.cpp — the ensemble router (cpp/ensemble_router.hpp) as Python
// starts and stops it; its dropped messages' references go to the payload
// layer's disposer.
#include <memory>
#include <vector>

#include "../cpp/ensemble_router.hpp"
#include "meter.hpp"
#include "owned.hpp"
#include "payload.hpp"
#include "ring.hpp"

namespace mpb {

using namespace mps;

namespace {

class PyEnsembleRouter {
 public:
  PyEnsembleRouter(std::shared_ptr<PyRing> input, std::vector<std::shared_ptr<PyRing>> members,
                   std::shared_ptr<PyRing> join, std::shared_ptr<PyRing> output, bool fail_fast,
                   std::shared_ptr<PyMeterBoard> meter, uint32_t record)
      : input_(std::move(input)),
        members_(std::move(members)),
        join_(std::move(join)),
        output_(std::move(output)),
        meter_(std::move(meter)) {
    std::vector<Ring*> rings;
    for (auto& m : members_) rings.push_back(m->ring.get());
    router_ =
        make_process_local<EnsembleRouter>(*input_->ring, rings, *join_->ring, *output_->ring, fail_fast);
    router().set_disposer(
        [](const OwnedMessage& m, int count) { dispose_message(m.flags, m.payload, count); });
    if (meter_) router().set_meter(&meter_->board->record(record));
  }
  ~PyEnsembleRouter() {
    if (!owned_here(router_)) return;  // a forked child's copy: leaked (process_local.hpp)
    py::gil_scoped_release nogil;
    router_.reset();
  }
  void start() { router().start(); }
  void join_fanout() {
    py::gil_scoped_release nogil;
    router().join_fanout();
  }
  void join_fanin() {
    py::gil_scoped_release nogil;
    router().join_fanin();
  }
  EnsembleRouter& router() { return owned(router_, "ensemble router"); }

 private:
  std::shared_ptr<PyRing> input_;
  std::vector<std::shared_ptr<PyRing>> members_;
  std::shared_ptr<PyRing> join_, output_;
  std::shared_ptr<PyMeterBoard> meter_;  // before router_: outlives it
  ProcessLocal<EnsembleRouter> router_;
};

}  // namespace

void define_routers(py::module_& m) {
  py::class_<PyEnsembleRouter>(m, "EnsembleRouter", "Fan-out and fan-in of an ensemble, on two C++ threads.")
      .def(py::init<std::shared_ptr<PyRing>, std::vector<std::shared_ptr<PyRing>>, std::shared_ptr<PyRing>,
                    std::shared_ptr<PyRing>, bool, std::shared_ptr<PyMeterBoard>, uint32_t>(),
           py::arg("input"), py::arg("members"), py::arg("join"), py::arg("output"), py::arg("fail_fast"),
           py::arg("meter") = nullptr, py::arg("record") = 0)
      .def("start", &PyEnsembleRouter::start)
      .def("join_fanout", &PyEnsembleRouter::join_fanout,
           "Returns once every input was handed to every member.")
      .def("join_fanin", &PyEnsembleRouter::join_fanin, "Returns once every result was emitted.")
      .def_property_readonly("emitted", [](PyEnsembleRouter& r) { return r.router().emitted(); })
      .def_property_readonly("dropped", [](PyEnsembleRouter& r) { return r.router().dropped(); })
      .def_property_readonly("open_entries", [](PyEnsembleRouter& r) { return r.router().open_entries(); });
}

}  // namespace mpb
