// exposition.hpp (bindings) — a Python servlet layout (_stats.Layout, which
// Server._layout holds) as the C++ tree cpp/exposition.hpp exposes, for
// _core.metrics_text() and for the native HTTP front's GET /metrics.
//
// Use: convert once, with the GIL, when the server starts (the layout does
// not change while it runs); then call mps::expose_metrics(board, tree.root,
// prefix) per scrape, from any thread and without the GIL:
//
//   mpb::ExposedTree tree = mpb::exposed_tree(server_layout);   // GIL held
//   ...
//   std::string text = mps::expose_metrics(*meter->board, tree.root, "mpserver");
//
// Invariants
//   * tree.root's Ring pointers point into tree.rings: an ExposedTree keeps
//     every ring it names alive for as long as it lives (copies and moves
//     included: the shared_ptrs travel with the tree).  The board is the
//     caller's to keep alive (a shared_ptr<PyMeterBoard>).
//   * exposed_tree() validates the whole layout before returning: a missing
//     attribute, a ring that is not a _core.Ring, a record that is not a
//     non-negative int, or nesting deeper than kMaxLayoutDepth (a cycle)
//     raises TypeError/ValueError naming the servlet's path; nothing is half
//     converted.  Records are checked against the board by expose_metrics()
//     (IndexError from Python).
#pragma once

#include <pybind11/pybind11.h>

#include <memory>
#include <vector>

#include "../cpp/exposition.hpp"
#include "ring.hpp"

namespace mpb {

namespace py = pybind11;

// A layout nested deeper than this is taken for a cycle.
inline constexpr int kMaxLayoutDepth = 256;

// The C++ tree of a layout and the rings it points to (see Invariants).
struct ExposedTree {
  mps::ExposedServlet root;
  std::vector<std::shared_ptr<PyRing>> rings;
};

// Converts a _stats.Layout (path, kind, label, ring: _core.Ring | None,
// workers: [.name, .record], router: int | None, children: [Layout]).
// Needs the GIL.
[[nodiscard]] ExposedTree exposed_tree(py::handle layout);

void define_exposition(py::module_& m);

}  // namespace mpb
