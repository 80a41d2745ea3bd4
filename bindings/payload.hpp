// payload.hpp — Python objects <-> the engine's message payloads.
//
// A message's flags (wire.hpp) say what its payload is, in both directions:
//   * kFlagObject: a PyObject* reference, main process only (thread
//     workers, the server's own threads).  A pushed message owns one
//     reference per reader of its ring (PyRing::object_refs).
//   * kFlagOob: a pickle with out-of-band buffers.  Outgoing, the Python
//     side hands a tuple (pickle, buffer, ...) and prepare_payload() lays it
//     out as oob_message.hpp says, each buffer copied once into the ring.
//     Incoming, the receiver gets a tuple of writable memoryviews (pickle,
//     buffer, ...) over one copy, ready for pickle.loads(buffers=...).
//   * kFlagEnsemble: a composite (composite.hpp).  Incoming, a composite
//     holding object references becomes (finished, [(part flags, value or
//     None), ...]) owning them; any other stays bytes, which composite_parts()
//     turns into the same form when Python decodes it.
//   * anything else (kFlagRaw, a plain pickle, a crash report): bytes.
//
// Invariants: every reference a message holds is released exactly once —
// adopted by the Python object that receives it, or dropped through
// dispose_message() when nobody will read it.  Functions taking
// py::handle/py::object need the GIL; dispose_message() takes it itself.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "../cpp/ring.hpp"

namespace mpb {

namespace py = pybind11;

// The bytes of one Python payload for the duration of a push.
struct PayloadRef {
  Py_buffer view{};
  bool has_view = false;
  PyObject* handle = nullptr;  // for kFlagObject
  mps::Slice slice{nullptr, 0};
  const mps::Slice* parts = &slice;
  size_t nparts = 1;
  std::vector<Py_buffer> oob_views;
  std::vector<mps::Slice> oob_parts;
  std::string oob_dir;
  PayloadRef() = default;
  PayloadRef(const PayloadRef&) = delete;
  PayloadRef& operator=(const PayloadRef&) = delete;
  ~PayloadRef();
};

// Makes `ref` hold `payload`'s bytes as `flags` say (see above).  Throws
// (TypeError, ValueError or the buffer protocol's error) if the payload does
// not match its flags.
void prepare_payload(py::handle payload, uint32_t flags, PayloadRef& ref);

// References a message of `flags` holds on `handle` (kFlagObject only).
void add_refs(uint32_t flags, PyObject* handle, int n);
void drop_refs(uint32_t flags, PyObject* handle, int n);

// The Python object a received payload becomes (copies bytes; adopts references).
py::object payload_to_object(uint32_t flags, const char* data, size_t len);
// payload_to_object for a payload the caller gives up: an out-of-band
// pickle keeps its memory (moved, not copied).
py::object take_payload(uint32_t flags, std::string& payload);
// The incoming form of an out-of-band pickle whose bytes are in `owner`
// (a writable buffer): a tuple of memoryviews (pickle, buffer, ...), or
// `owner` itself if the layout is corrupt (Python's decoder reports it).
py::object oob_object(py::object owner);

// Releases what a message nobody will read refers to: `count` references of
// an object message, or those of a composite's parts.  With the GIL.
void dispose_locked(uint32_t flags, const char* data, size_t len, int count);
// The same from an engine thread (takes the GIL only if there is something to release).
void dispose_message(uint32_t flags, const std::string& payload, int count);

// For a large message a consumer copies straight out of the ring: the
// Python object (bytes for kFlagRaw, bytearray for kFlagOob) that will hold
// `total` bytes, or null for the ordinary path.  Takes the GIL.
PyObject* new_direct_object(uint32_t flags, uint64_t total);

void define_payload(py::module_& m);

}  // namespace mpb
