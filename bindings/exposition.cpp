#include "exposition.hpp"

#include <string>

#include "meter.hpp"

namespace mpb {

ExposedTree exposed_tree(py::handle) { return {}; }

void define_exposition(py::module_& m) {
  m.def(
      "metrics_text",
      [](std::shared_ptr<PyMeterBoard> board, py::handle layout, const std::string& prefix) {
        ExposedTree tree = exposed_tree(layout);
        return mps::expose_metrics(*board->board, tree.root, prefix);
      },
      py::arg("board"), py::arg("layout"), py::arg("prefix") = "mpserver",
      "The Prometheus text exposition of the server's meters (cpp/exposition.hpp).");
  py::list table;
  for (const auto& r : mps::kExposedMetrics) table.append(py::make_tuple(r.name, r.type, r.scope, r.help));
  m.attr("EXPOSED_METRICS") = table;
}

}  // namespace mpb
