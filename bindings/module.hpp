// module.hpp — the pieces the _core module is defined from, one per file.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

namespace mps {
class RequestBook;
class Guardian;
}  // namespace mps

namespace mpb {

namespace py = pybind11;

void define_gil(py::module_& m);       // gil.cpp: signal checks of waits
void define_payload(py::module_& m);   // payload.cpp: received payloads, composites, oob sections
void define_ring(py::module_& m);      // ring.cpp: rings, claim tables, spin settings
void define_meter(py::module_& m);     // meter.cpp: the meter board, a worker's meter binding
void define_requests(py::module_& m);  // requests.cpp: RequestBook, StreamWindow
void define_routers(py::module_& m);   // routers.cpp: EnsembleRouter
void define_process(py::module_& m);   // process.cpp: SpawnSpec, Supervisor, Guardian, process tweaks
void define_testing(py::module_& m);   // testing.cpp: fuzzing and test entry points
void define_http(py::module_& m);      // http.cpp: HttpFront, the native HTTP front

// What another file's Python objects hold, for http.cpp (each defined where
// its class lives; TypeError if the object is not of that class, or gone).
mps::RequestBook& request_book_of(py::handle book);  // requests.cpp: a RequestBook
mps::Guardian& guardian_of(py::handle guardian);     // process.cpp: a Guardian

// exposition.cpp: metrics_text, the Prometheus exposition (cpp/exposition.hpp)
void define_exposition(py::module_& m);

}  // namespace mpb
