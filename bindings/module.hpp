// module.hpp — the pieces the _core module is defined from, one per file.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

namespace mpb {

namespace py = pybind11;

void define_gil(py::module_& m);       // gil.cpp: signal checks of waits
void define_payload(py::module_& m);   // payload.cpp: received payloads, composites, oob sections
void define_ring(py::module_& m);      // ring.cpp: rings, claim tables, spin settings
void define_meter(py::module_& m);     // meter.cpp: the meter board, a worker's meter binding
void define_requests(py::module_& m);  // requests.cpp: Engine (request book), StreamWindow
void define_routers(py::module_& m);   // routers.cpp: EnsembleRouter
void define_process(py::module_& m);   // process.cpp: SpawnSpec, Supervisor, Guardian, process tweaks
void define_testing(py::module_& m);   // testing.cpp: fuzzing and test entry points

// exposition.cpp: metrics_text, the Prometheus exposition (cpp/exposition.hpp)
void define_exposition(py::module_& m);

}  // namespace mpb
