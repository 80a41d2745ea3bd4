// testing.cpp — entry points for the fuzzer and the tests: ring frames and
// ensemble composites built or parsed from arbitrary bytes.
#include <functional>
#include <string>
#include <vector>

#include "../cpp/composite.hpp"
#include "../cpp/ring.hpp"
#include "../cpp/wire.hpp"
#include "payload.hpp"

namespace mpb {

using namespace mps;

void define_testing(py::module_& m) {
  m.def(
      "_fuzz_frames",
      [](py::bytes data) {
        // Lays arbitrary bytes into a fresh ring as if a producer wrote them and
        // consumes them: returns the messages read, or raises RingCorrupt.
        std::string bytes = data;
        auto ring = Ring::create(64 * 1024, "mpserver-fuzz");
        ring->load_raw_for_test(bytes.data(), bytes.size());
        ring->close();  // no more frames will come: a message cut short is aborted
        struct Count : MessageSink {
          size_t n = 0;
          void begin(uint64_t, uint32_t, uint64_t, uint64_t) override {}
          void append(const char*, size_t) override {}
          void end() override { ++n; }
        } sink;
        py::gil_scoped_release nogil;
        while (!ring->empty() && ring->try_consume(SIZE_MAX, sink) > 0) {
        }
        return sink.n;
      },
      py::arg("data"), "Fuzzing entry: consume arbitrary bytes as ring frames.");
  m.def(
      "_fuzz_composite",
      [](py::bytes data) {
        // Walks an arbitrary composite payload (and nested ones) with the
        // engine's bounds-checked parser; returns (parts, well_formed).
        std::string bytes = data;
        size_t parts = 0;
        std::function<bool(const char*, size_t, int)> walk = [&](const char* d, size_t n, int depth) {
          bool ok = true;
          bool shape = for_each_part(d, n, nullptr, [&](uint32_t, uint32_t f, const char* p, size_t len) {
            ++parts;
            if (f != kPartMissing && (f & kFlagEnsemble) && depth < 8) ok = walk(p, len, depth + 1) && ok;
          });
          return shape && ok;
        };
        bool ok = walk(bytes.data(), bytes.size(), 0);
        return py::make_tuple(parts, ok);
      },
      py::arg("data"), "Fuzzing entry: parse arbitrary bytes as an ensemble composite.");
  m.def(
      "compose_ensemble",
      [](std::vector<uint32_t> flags, std::vector<py::bytes> parts, uint32_t finished) {
        std::vector<std::string> ps(parts.begin(), parts.end());
        return py::bytes(compose(flags, ps, finished));
      },
      py::arg("flags"), py::arg("parts"), py::arg("finished"),
      "Builds an ensemble composite payload (for tests).");
}

}  // namespace mpb
