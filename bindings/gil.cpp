#include "gil.hpp"

namespace mpb {

unsigned long g_main_thread = 0;
bool g_signal_checks = true;

void define_gil(py::module_& m) {
  g_main_thread = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
  m.def(
      "set_signal_checks", [](bool on) { g_signal_checks = on; }, py::arg("on"),
      "Whether waits on the main thread wake every 50 ms to run Python signal handlers.");
}

}  // namespace mpb
