#include "payload.hpp"

#include <cstring>
#include <functional>

#include "../cpp/composite.hpp"
#include "../cpp/oob_message.hpp"
#include "../cpp/wire.hpp"

namespace mpb {

using namespace mps;

PayloadRef::~PayloadRef() {
  if (has_view) PyBuffer_Release(&view);
  for (auto& v : oob_views) PyBuffer_Release(&v);
}

namespace {

// A contiguous view of `obj` (C or Fortran order: pickle hands out-of-band
// buffers of either), appended to `views`.
const Py_buffer& get_contiguous(PyObject* obj, std::vector<Py_buffer>& views) {
  Py_buffer v{};
  if (PyObject_GetBuffer(obj, &v, PyBUF_FULL_RO) != 0) throw py::error_already_set();
  if (!PyBuffer_IsContiguous(&v, 'A')) {
    PyBuffer_Release(&v);
    throw py::value_error("an out-of-band pickle buffer is not contiguous");
  }
  views.push_back(v);
  return views.back();
}

// (pickle, buffer, ...) laid out as oob_message.hpp says.
void prepare_oob(py::handle payload, PayloadRef& ref) {
  PyObject* t = payload.ptr();
  if (!PyTuple_Check(t)) throw py::type_error("an out-of-band payload must be a tuple (pickle, buffer, ...)");
  const Py_ssize_t n = PyTuple_GET_SIZE(t);
  if (n < 1 || size_t(n) > kOobMaxSections) throw py::value_error("malformed out-of-band payload");
  ref.oob_views.reserve(size_t(n));
  std::vector<size_t> lens;
  for (Py_ssize_t i = 0; i < n; ++i)
    lens.push_back(size_t(get_contiguous(PyTuple_GET_ITEM(t, i), ref.oob_views).len));
  ref.oob_dir = oob_directory(lens);
  ref.oob_parts.push_back({ref.oob_dir.data(), ref.oob_dir.size()});
  for (const Py_buffer& v : ref.oob_views) {
    ref.oob_parts.push_back({static_cast<const char*>(v.buf), size_t(v.len)});
    if (size_t pad = oob_pad(size_t(v.len))) ref.oob_parts.push_back({kOobZeros, pad});
  }
  ref.parts = ref.oob_parts.data();
  ref.nparts = ref.oob_parts.size();
}

// True if a composite (or a composite nested in it) holds object references.
bool composite_holds_objects(const char* data, size_t len) {
  bool found = false;
  (void)for_each_part(data, len, nullptr, [&](uint32_t, uint32_t flags, const char* p, size_t n) {
    if (flags == kPartMissing) return;
    if (flags & kFlagObject)
      found = true;
    else if (flags & kFlagEnsemble)
      found = found || composite_holds_objects(p, n);
  });
  return found;
}

// (finished, [(part flags, value or None if missing), ...]).  Taking object
// references over at once means a result dropped before it is decoded (a
// stream left early, a cancelled async call) still releases them.
py::tuple composite_object(const char* data, size_t len) {
  CompositeHead head;
  py::list parts;
  bool ok = for_each_part(data, len, &head, [&](uint32_t, uint32_t flags, const char* p, size_t n) {
    if (flags == kPartMissing)
      parts.append(py::make_tuple(flags, py::none()));
    else
      parts.append(py::make_tuple(flags, payload_to_object(flags, p, n)));
  });
  if (!ok) throw py::value_error("malformed ensemble composite");
  return py::make_tuple(head.finished, parts);
}

// A received out-of-band pickle's bytes, moved out of the ledger (no copy).
struct OwnedBytes {
  std::string data;
};

py::list sections_of(py::memoryview mv, bool strict) {
  Py_buffer* b = PyMemoryView_GET_BUFFER(mv.ptr());
  if (!PyBuffer_IsContiguous(b, 'C') || b->itemsize != 1) {
    if (strict) throw py::value_error("payload is not a contiguous run of bytes");
    return py::list();
  }
  std::vector<OobSection> secs;
  if (!oob_layout(static_cast<const char*>(b->buf), size_t(b->len), &secs)) {
    if (strict) throw py::value_error("corrupt out-of-band message");
    return py::list();
  }
  py::list out(secs.size());
  for (size_t i = 0; i < secs.size(); ++i) {
    PyObject* v = PySequence_GetSlice(mv.ptr(), Py_ssize_t(secs[i].offset),
                                      Py_ssize_t(secs[i].offset + secs[i].length));
    if (!v) throw py::error_already_set();
    out[i] = py::reinterpret_steal<py::object>(v);
  }
  return out;
}

}  // namespace

void prepare_payload(py::handle payload, uint32_t flags, PayloadRef& ref) {
  if (flags & kFlagObject) {
    ref.handle = payload.ptr();
    ref.slice = {reinterpret_cast<const char*>(&ref.handle), sizeof(PyObject*)};
    return;
  }
  if (flags & kFlagOob) {
    prepare_oob(payload, ref);
    return;
  }
  // PyBUF_SIMPLE: a contiguous run of bytes (bytes, bytearray, memoryview, ...).
  if (PyObject_GetBuffer(payload.ptr(), &ref.view, PyBUF_SIMPLE) != 0) throw py::error_already_set();
  ref.has_view = true;
  ref.slice = {static_cast<const char*>(ref.view.buf), size_t(ref.view.len)};
}

void add_refs(uint32_t flags, PyObject* handle, int n) {
  if (flags & kFlagObject)
    for (int i = 0; i < n; ++i) Py_INCREF(handle);
}

void drop_refs(uint32_t flags, PyObject* handle, int n) {
  if (flags & kFlagObject)
    for (int i = 0; i < n; ++i) Py_DECREF(handle);
}

py::object oob_object(py::object owner) {
  py::list secs = sections_of(py::memoryview(owner), false);
  if (secs.empty()) return owner;
  return py::tuple(secs);
}

py::object payload_to_object(uint32_t flags, const char* data, size_t len) {
  if (flags & kFlagObject) {
    if (len != sizeof(PyObject*)) throw RingCorrupt("object reference of the wrong size");
    PyObject* p;
    std::memcpy(&p, data, sizeof p);
    return py::reinterpret_steal<py::object>(p);
  }
  if ((flags & kFlagEnsemble) && composite_holds_objects(data, len)) return composite_object(data, len);
  if (flags & kFlagOob) {
    // Writable, so that arrays unpickled over it are writable, as in-band ones are.
    PyObject* b = PyByteArray_FromStringAndSize(data, Py_ssize_t(len));
    if (!b) throw py::error_already_set();
    return oob_object(py::reinterpret_steal<py::object>(b));
  }
  return py::bytes(data, len);
}

py::object take_payload(uint32_t flags, std::string& payload) {
  if ((flags & kFlagOob) && !(flags & (kFlagObject | kFlagEnsemble)))
    return oob_object(py::cast(OwnedBytes{std::move(payload)}));
  return payload_to_object(flags, payload.data(), payload.size());
}

void dispose_locked(uint32_t flags, const char* data, size_t len, int count) {
  if ((flags & kFlagObject) && len == sizeof(PyObject*)) {
    PyObject* p;
    std::memcpy(&p, data, sizeof p);
    for (int i = 0; i < count; ++i) Py_DECREF(p);
    return;
  }
  if (!(flags & kFlagEnsemble)) return;
  // A corrupt composite stops the walk: leak rather than read out of bounds.
  (void)for_each_part(data, len, nullptr, [&](uint32_t, uint32_t pflags, const char* p, size_t n) {
    if (pflags != kPartMissing) dispose_locked(pflags, p, n, 1);
  });
}

void dispose_message(uint32_t flags, const std::string& payload, int count) {
  if (!(flags & (kFlagObject | kFlagEnsemble)) || count <= 0) return;
  py::gil_scoped_acquire gil;
  dispose_locked(flags, payload.data(), payload.size(), count);
}

PyObject* new_direct_object(uint32_t flags, uint64_t total) {
  if (!(flags & (kFlagRaw | kFlagOob)) || (flags & (kFlagObject | kFlagEnsemble))) return nullptr;
  py::gil_scoped_acquire gil;
  PyObject* o = (flags & kFlagRaw) ? PyBytes_FromStringAndSize(nullptr, Py_ssize_t(total))
                                   : PyByteArray_FromStringAndSize(nullptr, Py_ssize_t(total));
  if (!o) PyErr_Clear();  // out of memory: the ordinary path reports it
  return o;
}

void define_payload(py::module_& m) {
  py::class_<OwnedBytes>(m, "OwnedBytes", py::buffer_protocol(),
                         "A received out-of-band pickle's bytes (a writable buffer).")
      .def_buffer([](OwnedBytes& b) {
        return py::buffer_info(b.data.data(), 1, py::format_descriptor<uint8_t>::format(), 1,
                               {py::ssize_t(b.data.size())}, {py::ssize_t(1)}, false);
      })
      .def("__len__", [](const OwnedBytes& b) { return b.data.size(); });
  m.def(
      "oob_sections", [](py::object payload) { return sections_of(py::memoryview(payload), true); },
      py::arg("payload"),
      "Memoryviews of the pickle and its buffers inside an out-of-band message; ValueError if corrupt.");
  m.def(
      "composite_parts",
      [](py::buffer payload) {
        py::buffer_info b = payload.request();
        if (b.itemsize != 1 || b.ndim != 1) throw py::value_error("a composite is a run of bytes");
        return composite_object(static_cast<const char*>(b.ptr), size_t(b.size));
      },
      py::arg("payload"),
      "An ensemble composite's parts: (finished, [(part flags, received value or None), ...]); "
      "ValueError if malformed.");
  m.def(
      "receive",
      [](uint32_t flags, py::bytes data) {
        if (flags & kFlagObject) throw py::value_error("an object reference cannot be received from bytes");
        std::string s = data;
        return take_payload(flags, s);
      },
      py::arg("flags"), py::arg("data"),
      "The object a consumer receives for a message of these flags and bytes (for tests).");
}

}  // namespace mpb
