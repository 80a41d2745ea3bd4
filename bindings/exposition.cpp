#include "exposition.hpp"

#include <string>
#include <utility>

#include "meter.hpp"

namespace mpb {

namespace {

std::string where(const std::string& path) {
  return "layout " + (path.empty() ? std::string("?") : path) + ": ";
}

py::object attr(py::handle obj, const char* name, const std::string& path) {
  if (!py::hasattr(obj, name))
    throw py::type_error(where(path) + "a " +
                         std::string(py::str(py::type::handle_of(obj).attr("__name__"))) +
                         " has no attribute '" + name + "' (expected a _stats.Layout)");
  return obj.attr(name);
}

std::string text(py::handle obj, const char* name, const std::string& path) {
  py::object v = attr(obj, name, path);
  if (!py::isinstance<py::str>(v)) throw py::type_error(where(path) + name + " must be a str");
  return v.cast<std::string>();
}

int64_t record(py::handle v, const char* what, const std::string& path) {
  if (!py::isinstance<py::int_>(v) || py::isinstance<py::bool_>(v))
    throw py::type_error(where(path) + what + " must be an int");
  const auto r = v.cast<long long>();
  if (r < 0 || r > int64_t(UINT32_MAX))
    throw py::value_error(where(path) + what + " must be a meter record number");
  return r;
}

void convert(py::handle lay, int depth, mps::ExposedServlet& out,
             std::vector<std::shared_ptr<PyRing>>& rings) {
  if (depth > kMaxLayoutDepth)
    throw py::value_error("layout nests deeper than " + std::to_string(kMaxLayoutDepth) +
                          " levels (a cycle?)");
  out.path = text(lay, "path", "");
  out.kind = text(lay, "kind", out.path);
  out.label = text(lay, "label", out.path);
  py::object ring = attr(lay, "ring", out.path);
  if (!ring.is_none()) {
    if (!py::isinstance<PyRing>(ring))
      throw py::type_error(where(out.path) + "ring must be a _core.Ring or None");
    auto r = ring.cast<std::shared_ptr<PyRing>>();
    out.ring = r->ring.get();
    rings.push_back(std::move(r));
  }
  for (py::handle w : attr(lay, "workers", out.path)) {
    const std::string who = out.path + " worker";
    mps::ExposedWorker& x = out.workers.emplace_back();
    x.name = text(w, "name", who);
    x.record = uint32_t(record(attr(w, "record", who), "worker record", out.path));
  }
  py::object router = attr(lay, "router", out.path);
  out.router = router.is_none() ? -1 : record(router, "router", out.path);
  for (py::handle c : attr(lay, "children", out.path))
    convert(c, depth + 1, out.children.emplace_back(), rings);
}

}  // namespace

ExposedTree exposed_tree(py::handle layout) {
  ExposedTree tree;
  convert(layout, 0, tree.root, tree.rings);
  return tree;
}

void define_exposition(py::module_& m) {
  m.def(
      "metrics_text",
      [](std::shared_ptr<PyMeterBoard> board, py::handle layout, const std::string& prefix) {
        if (!board || !board->board) throw py::value_error("no meter board");
        const ExposedTree tree = exposed_tree(layout);
        py::gil_scoped_release nogil;
        return mps::expose_metrics(*board->board, tree.root, prefix);
      },
      py::arg("board"), py::arg("layout"), py::arg("prefix") = "mpserver",
      "The Prometheus text exposition (format 0.0.4) of the server's meters: what "
      "prometheus_client.generate_latest() writes for mpserver.metrics.families(snapshot(board, layout), "
      "prefix), produced in C++ (cpp/exposition.hpp).");
  py::list table;
  for (const auto& r : mps::kExposedMetrics) table.append(py::make_tuple(r.name, r.type, r.scope, r.help));
  m.attr("EXPOSED_METRICS") = table;
}

}  // namespace mpb
