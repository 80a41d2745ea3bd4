// pybind11 glue for the C++ core: converts between Python objects and the
// engine's byte messages, and releases the GIL around every wait.  No
// scheduling or queueing logic lives here.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <malloc.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../cpp/batcher.hpp"
#include "../cpp/claims.hpp"
#include "../cpp/collector.hpp"
#include "../cpp/completion_queue.hpp"
#include "../cpp/ensemble_router.hpp"
#include "../cpp/flags.hpp"
#include "../cpp/guardian.hpp"
#include "../cpp/ledger.hpp"
#include "../cpp/oob_message.hpp"
#include "../cpp/ring.hpp"
#include "../cpp/shm.hpp"
#include "../cpp/stream_window.hpp"
#include "../cpp/supervisor.hpp"

namespace py = pybind11;
using namespace mps;

namespace {

// Spin budgets (busy-wait rounds before a futex sleep); tunable for benchmarks.
int g_worker_spin = 2000;
int g_collector_spin = 0;
int g_worker_yields = 0;
// The collector yields its core before it sleeps: the sleep, and the futex
// wake-up every worker push would pay to end it, cost more than the result
// itself (2 workers on 2 cores: ~280k -> ~470k items/s).
int g_collector_yields = 100;

// Caller flags (kFlagObject, kFlagError, ...) are in cpp/flags.hpp.

// Status codes shared with python/mpserver/_server.py.
enum Status : int {
  kOk = 0,
  kBacklogFull = 1,      // no free slot and backpressure=True
  kBacklogTimeout = 2,   // waited for a slot until the deadline
  kResultTimeout = 3,    // the result did not arrive by the deadline
  kClosed = 4,           // the server is not accepting requests
  kPushTimeout = 5,      // the entry ring stayed full until the deadline
};

// Waits made on the interpreter's main thread are cut into slices so that a
// signal handler (Ctrl-C -> KeyboardInterrupt) runs within ~50 ms; other
// threads cannot receive signals in Python, so they wait in one piece.
// Worker processes ignore SIGINT and turn this off, so idle workers sleep
// in one piece instead of waking 20 times a second.
unsigned long g_main_thread = 0;
bool g_signal_checks = true;
constexpr int64_t kSignalSlice = 50'000'000;

bool on_main_thread() { return g_signal_checks && PyThread_get_thread_ident() == g_main_thread; }

// Calls wait(slice_deadline) without the GIL until it returns true or the
// deadline passes (returns false).  Throws error_already_set if a signal
// handler raised; `on_interrupt` runs first (with the GIL) to undo state.
template <class Wait, class Undo>
bool wait_interruptibly(int64_t deadline, Wait&& wait, Undo&& on_interrupt) {
  const bool slice = on_main_thread();
  for (;;) {
    int64_t until = deadline;
    if (slice) {
      int64_t s = now_ns() + kSignalSlice;
      if (s < until) until = s;
    }
    bool done;
    {
      py::gil_scoped_release nogil;
      done = wait(until);
    }
    if (done) return true;
    if (until >= deadline || now_ns() >= deadline) return false;
    if (PyErr_CheckSignals() != 0) {
      on_interrupt();
      throw py::error_already_set();
    }
  }
}

int64_t deadline_from(py::object timeout) {
  if (timeout.is_none()) return kForever;
  return deadline_after(timeout.cast<double>());
}

// Holds the bytes of one Python payload for the duration of a push: one
// buffer, or, for an out-of-band pickle, its directory, the pickle and every
// buffer (see oob_message.hpp), each copied once into the ring.
struct PayloadRef {
  Py_buffer view{};
  bool has_view = false;
  PyObject* handle = nullptr;  // for kFlagObject
  Slice slice{nullptr, 0};
  const Slice* parts = &slice;
  size_t nparts = 1;
  uint32_t extra_flags = 0;  // kFlagRaw / kFlagOob, from a tagged payload
  std::vector<Py_buffer> oob_views;
  std::vector<Slice> oob_parts;
  std::string oob_dir;
  PayloadRef() = default;
  PayloadRef(const PayloadRef&) = delete;
  PayloadRef& operator=(const PayloadRef&) = delete;
  ~PayloadRef() {
    if (has_view) PyBuffer_Release(&view);
    for (auto& v : oob_views) PyBuffer_Release(&v);
  }
};

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

// A tagged payload from the pickle codec: (kFlagRaw, bytes) or
// (kFlagOob, pickle, buffer, ...).
void prepare_tagged(py::handle payload, PayloadRef& ref) {
  PyObject* t = payload.ptr();
  const Py_ssize_t n = PyTuple_GET_SIZE(t);
  if (n < 2) throw py::value_error("a tagged payload needs a tag and data");
  const uint32_t tag = py::reinterpret_borrow<py::object>(PyTuple_GET_ITEM(t, 0)).cast<uint32_t>();
  if (tag == kFlagRaw && n == 2) {
    if (PyObject_GetBuffer(PyTuple_GET_ITEM(t, 1), &ref.view, PyBUF_SIMPLE) != 0)
      throw py::error_already_set();
    ref.has_view = true;
    ref.slice = {static_cast<const char*>(ref.view.buf), size_t(ref.view.len)};
    ref.extra_flags = kFlagRaw;
    return;
  }
  if (tag != kFlagOob || size_t(n - 1) > kOobMaxSections)
    throw py::value_error("malformed tagged payload");
  ref.oob_views.reserve(size_t(n - 1));
  std::vector<size_t> lens;
  for (Py_ssize_t i = 1; i < n; ++i)
    lens.push_back(size_t(get_contiguous(PyTuple_GET_ITEM(t, i), ref.oob_views).len));
  ref.oob_dir = oob_directory(lens);
  ref.oob_parts.push_back({ref.oob_dir.data(), ref.oob_dir.size()});
  for (const Py_buffer& v : ref.oob_views) {
    ref.oob_parts.push_back({static_cast<const char*>(v.buf), size_t(v.len)});
    if (size_t pad = oob_pad(size_t(v.len))) ref.oob_parts.push_back({kOobZeros, pad});
  }
  ref.parts = ref.oob_parts.data();
  ref.nparts = ref.oob_parts.size();
  ref.extra_flags = kFlagOob;
}

// Makes `ref` hold `payload`'s bytes; returns the message's flags (the
// caller's, plus the tag of a tagged payload).
uint32_t prepare_payload(py::handle payload, uint32_t flags, PayloadRef& ref) {
  if (flags & kFlagObject) {
    ref.handle = payload.ptr();
    ref.slice = {reinterpret_cast<const char*>(&ref.handle), sizeof(PyObject*)};
    return flags;
  }
  if (PyTuple_Check(payload.ptr())) {
    prepare_tagged(payload, ref);
    return flags | ref.extra_flags;
  }
  // PyBUF_SIMPLE: a contiguous run of bytes (bytes, bytearray, memoryview, ...).
  if (PyObject_GetBuffer(payload.ptr(), &ref.view, PyBUF_SIMPLE) != 0) throw py::error_already_set();
  ref.has_view = true;
  ref.slice = {static_cast<const char*>(ref.view.buf), size_t(ref.view.len)};
  return flags;
}

// True if a composite (or a composite nested in it) holds object references.
bool composite_holds_objects(const char* data, size_t len) {
  bool found = false;
  for_each_part(data, len, nullptr, [&](uint32_t, uint32_t flags, const char* p, size_t n) {
    if (flags == kPartMissing) return;
    if (flags & kFlagObject) found = true;
    else if (flags & kFlagEnsemble) found = found || composite_holds_objects(p, n);
  });
  return found;
}

py::object payload_to_object(uint32_t flags, const char* data, size_t len);

// A composite holding object references, as Python objects that own them:
// (finished, [(part flags, value or None if missing), ...]).  Taking them
// over at once means a result dropped before it is decoded (a stream left
// early, a cancelled async call) still releases them.
py::tuple composite_to_object(const char* data, size_t len) {
  CompositeHead head;
  py::list parts;
  bool ok = for_each_part(data, len, &head, [&](uint32_t, uint32_t flags, const char* p, size_t n) {
    if (flags == kPartMissing) parts.append(py::make_tuple(flags, py::none()));
    else parts.append(py::make_tuple(flags, payload_to_object(flags, p, n)));
  });
  if (!ok) throw RingCorrupt("malformed ensemble composite");
  return py::make_tuple(head.finished, parts);
}

// Turns a consumed message payload back into a Python object: a PyObject*
// handle is adopted (its reference moves to the caller); a composite that
// holds handles becomes a tuple owning them; other bytes are copied.
py::object payload_to_object(uint32_t flags, const char* data, size_t len) {
  if (flags & kFlagObject) {
    if (len != sizeof(PyObject*)) throw RingCorrupt("object reference of the wrong size");
    PyObject* p;
    std::memcpy(&p, data, sizeof p);
    return py::reinterpret_steal<py::object>(p);
  }
  if ((flags & kFlagEnsemble) && composite_holds_objects(data, len))
    return composite_to_object(data, len);
  if (flags & kFlagOob) {
    // Writable, so that arrays unpickled over it are writable, as in-band ones are.
    PyObject* b = PyByteArray_FromStringAndSize(data, Py_ssize_t(len));
    if (!b) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(b);
  }
  return py::bytes(data, len);
}

// A received payload handed to Python without a copy: the bytes of an
// out-of-band pickle, which Python unpickles in place (writable, so arrays
// over it are writable, as in-band ones are).
struct OwnedBytes {
  std::string data;
};

// payload_to_object for a payload the caller gives up: an out-of-band
// pickle keeps its memory (moved, not copied); anything else is converted.
py::object take_payload(uint32_t flags, std::string& payload) {
  if ((flags & kFlagOob) && !(flags & (kFlagObject | kFlagEnsemble)))
    return py::cast(OwnedBytes{std::move(payload)});
  return payload_to_object(flags, payload.data(), payload.size());
}

// Memoryviews of the pickle and its buffers inside an out-of-band message
// (see oob_message.hpp); they share `payload`'s memory.
py::list oob_sections(py::object payload) {
  py::memoryview mv(payload);
  Py_buffer* b = PyMemoryView_GET_BUFFER(mv.ptr());
  if (!PyBuffer_IsContiguous(b, 'C') || b->itemsize != 1)
    throw py::value_error("payload is not a contiguous run of bytes");
  std::vector<OobSection> secs;
  if (!oob_layout(static_cast<const char*>(b->buf), size_t(b->len), &secs))
    throw py::value_error("corrupt out-of-band message");
  py::list out(secs.size());
  for (size_t i = 0; i < secs.size(); ++i) {
    PyObject* v = PySequence_GetSlice(mv.ptr(), Py_ssize_t(secs[i].offset),
                                      Py_ssize_t(secs[i].offset + secs[i].length));
    if (!v) throw py::error_already_set();
    out[i] = py::reinterpret_steal<py::object>(v);
  }
  return out;
}

// References a message of `flags` holds on `handle` (kFlagObject only): one
// per consumer.  A ring feeding an ensemble of N by-reference members is
// read N times (the router copies the pointer to every member), so its
// producers add N references.
void add_refs(uint32_t flags, PyObject* handle, int n) {
  if (flags & kFlagObject)
    for (int i = 0; i < n; ++i) Py_INCREF(handle);
}
void drop_refs(uint32_t flags, PyObject* handle, int n) {
  if (flags & kFlagObject)
    for (int i = 0; i < n; ++i) Py_DECREF(handle);
}

// Releases what a message nobody will read refers to: its object reference
// (`count` of them), or, for an ensemble composite, those of its parts.
// Called with the GIL held.
void dispose_locked(uint32_t flags, const char* data, size_t len, int count) {
  if ((flags & kFlagObject) && len == sizeof(PyObject*)) {
    PyObject* p;
    std::memcpy(&p, data, sizeof p);
    for (int i = 0; i < count; ++i) Py_DECREF(p);
    return;
  }
  if (!(flags & kFlagEnsemble)) return;
  // A corrupt composite stops the walk: leak rather than read out of bounds.
  for_each_part(data, len, nullptr, [&](uint32_t, uint32_t pflags, const char* p, size_t n) {
    if (pflags != kPartMissing) dispose_locked(pflags, p, n, 1);
  });
}

// From an engine thread (no GIL): dispose of a dropped message if it holds references.
void dispose_message(uint32_t flags, const std::string& payload, int count) {
  if (!(flags & (kFlagObject | kFlagEnsemble)) || count <= 0) return;
  py::gil_scoped_acquire gil;
  dispose_locked(flags, payload.data(), payload.size(), count);
}

PushStatus push_with_gil_rules(Ring& ring, const OutMessage* msgs, size_t n, int64_t deadline,
                               size_t* written) {
  PushStatus st = ring.try_push(msgs, n, written);
  if (st != PushStatus::timeout) return st;
  size_t done = written ? *written : 0;
  py::gil_scoped_release nogil;
  size_t more = 0;
  st = ring.push(msgs + done, n - done, deadline, &more);
  if (written) *written = done + more;
  return st;
}

// ------------------------------------------------------------------ claims

// The claim section of the worker running on this thread (a worker process's
// main thread, or a ThreadServlet thread); null elsewhere.  gather() claims
// what it takes, push() releases what it answers (see claims.hpp).
thread_local ClaimTable* t_claims = nullptr;
thread_local uint32_t t_claim_worker = 0;

struct PyClaimTable {
  std::unique_ptr<ClaimTable> table;
};

void release_claim(uint64_t id) {
  if (t_claims) t_claims->release(t_claim_worker, id);
}

// ------------------------------------------------------------------ Ring

// Called by a consumer without the GIL, while it holds the ring's consumer
// lock, for a message of kLargePayloadBytes or more, so that it is copied
// from the ring straight into the Python object the receiver gets: the bytes (kFlagRaw) or bytearray (kFlagOob) that will hold a
// message of `total` bytes, or null to take the ordinary path.  Taking the
// GIL here cannot deadlock: no thread of ours waits for a consumer lock while
// holding the GIL (every consumer releases it first).
PyObject* new_direct_object(uint32_t flags, uint64_t total) {
  if (!(flags & (kFlagRaw | kFlagOob)) || (flags & (kFlagObject | kFlagEnsemble))) return nullptr;
  py::gil_scoped_acquire gil;
  PyObject* o = (flags & kFlagRaw) ? PyBytes_FromStringAndSize(nullptr, Py_ssize_t(total))
                                   : PyByteArray_FromStringAndSize(nullptr, Py_ssize_t(total));
  if (!o) PyErr_Clear();  // out of memory: the ordinary path reports it
  return o;
}

class PyRing {
 public:
  explicit PyRing(std::unique_ptr<Ring> r) : ring(std::move(r)) {}
  std::unique_ptr<Ring> ring;
  int object_refs = 1;  // references an object message takes (see add_refs)

  // Pushes one message.  Returns a Status code (kOk, kPushTimeout, kClosed).
  int push(uint64_t id, uint32_t flags, py::handle payload, uint64_t aux, py::object timeout) {
    PayloadRef ref;
    flags = prepare_payload(payload, flags, ref);
    OutMessage m{id, flags, aux, ref.parts, ref.nparts};
    add_refs(flags, ref.handle, object_refs);
    PushStatus st = push_with_gil_rules(*ring, &m, 1, deadline_from(timeout), nullptr);
    if (st != PushStatus::ok) drop_refs(flags, ref.handle, object_refs);
    release_claim(id);
    return st == PushStatus::ok ? kOk : st == PushStatus::closed ? kClosed : kPushTimeout;
  }

  // Pushes [(id, flags, payload), ...] in order under one producer lock.
  int push_many(py::list items, uint64_t aux) {
    const size_t n = items.size();
    std::unique_ptr<PayloadRef[]> refs(new PayloadRef[n ? n : 1]);
    std::vector<OutMessage> msgs(n);
    std::vector<py::tuple> keep(n);
    for (size_t i = 0; i < n; ++i) {
      keep[i] = items[i].cast<py::tuple>();
      uint64_t id = keep[i][0].cast<uint64_t>();
      uint32_t flags = prepare_payload(keep[i][2], keep[i][1].cast<uint32_t>(), refs[i]);
      msgs[i] = OutMessage{id, flags, aux, refs[i].parts, refs[i].nparts};
    }
    for (size_t i = 0; i < n; ++i) add_refs(msgs[i].flags, refs[i].handle, object_refs);
    size_t written = 0;
    PushStatus st = push_with_gil_rules(*ring, msgs.data(), n, kForever, &written);
    for (size_t i = written; i < n; ++i) drop_refs(msgs[i].flags, refs[i].handle, object_refs);
    for (size_t i = 0; i < n; ++i) release_claim(msgs[i].id);
    return st == PushStatus::ok ? kOk : st == PushStatus::closed ? kClosed : kPushTimeout;
  }

  // Takes the worker's next unit of work (see batcher.hpp).  Returns a list
  // of (id, flags, aux, payload); [] if idle_timeout passed with nothing;
  // None once the ring is closed and drained.
  py::object gather(size_t max_items, double wait_time, py::object idle_timeout) {
    struct Item {
      uint64_t id;
      uint32_t flags;
      uint64_t aux;
      size_t off, len;
      PyObject* direct;  // a large message copied straight into its Python object
    };
    struct BufSink : MessageSink {
      std::vector<Item> items;
      std::string buf;
      char* dest = nullptr;  // write position inside items.back().direct
      ~BufSink() override {  // runs with the GIL held (end of gather())
        for (Item& it : items) Py_XDECREF(it.direct);
      }
      void begin(uint64_t id, uint32_t flags, uint64_t aux, uint64_t total) override {
        // Claimed while the ring still holds it: a death from here on is seen.
        if (t_claims) t_claims->claim(t_claim_worker, id, aux);
        PyObject* direct = total >= kLargePayloadBytes ? new_direct_object(flags, total) : nullptr;
        items.push_back({id, flags, aux, buf.size(), 0, direct});
        if (direct) {
          dest = PyBytes_Check(direct) ? PyBytes_AS_STRING(direct) : PyByteArray_AS_STRING(direct);
        } else {
          dest = nullptr;
          buf.reserve(buf.size() + total);
        }
      }
      void append(const char* d, size_t n) override {
        Item& it = items.back();
        if (it.direct) std::memcpy(dest + it.len, d, n);
        else buf.append(d, n);
        it.len += n;
      }
      void end() override {}
      void abort() override {
        Item& it = items.back();
        release_claim(it.id);
        if (it.direct) {
          py::gil_scoped_acquire gil;
          Py_DECREF(it.direct);
        }
        buf.resize(it.off);
        items.pop_back();
      }
    } sink;
    BatchPolicy policy;
    policy.spin = g_worker_spin;
    policy.yields = g_worker_yields;
    policy.max_items = max_items;
    policy.wait_ns = int64_t(wait_time * 1e9);
    int64_t deadline = deadline_from(idle_timeout);
    size_t n = 0;
    wait_interruptibly(
        deadline,
        [&](int64_t until) {
          n = mps::gather(*ring, sink, policy, until);
          return n > 0 || ring->finished();
        },
        [] {});
    if (n == 0) {
      if (ring->finished()) return py::none();
      return py::list();
    }
    py::list out(n);
    for (size_t i = 0; i < n; ++i) {
      const Item& it = sink.items[i];
      py::object payload = it.direct ? py::reinterpret_steal<py::object>(it.direct)
                                     : payload_to_object(it.flags, sink.buf.data() + it.off, it.len);
      sink.items[i].direct = nullptr;
      out[i] = py::make_tuple(it.id, it.flags, it.aux, std::move(payload));
    }
    return out;
  }

};

// ------------------------------------------------------------------ BytesPool

// The collector's PayloadHome for large raw-bytes results: Python bytes
// objects allocated ahead of time by the thread that takes results (with the
// GIL), filled by the collector (without it), so a large result is copied
// once, from the ring into the object the caller gets.  A filled object
// travels in its slot as an object reference (kFlagObject | kFlagRaw).
//
// An object in the pool is referenced by the pool alone and is unreachable
// from Python, so the collector may write its bytes and shrink its size
// without the GIL.  Sizes adapt to the traffic: every large raw result taken
// asks for one more object of its size (two if it came without one), up to kMaxObjects
// objects and kMaxBytes bytes; an object is used for a result of its size or
// up to 1/8 smaller.
class BytesPool : public PayloadHome {
 public:
  static constexpr size_t kMaxObjects = 64;
  static constexpr size_t kMaxBytes = 256u << 20;

  ~BytesPool() override { clear(); }

  char* acquire(uint32_t flags, uint64_t total, uint32_t* slot_flags,
                std::string* slot_payload) override {
    if ((flags & (kFlagRaw | kFlagObject | kFlagEnsemble | kFlagError)) != kFlagRaw) return nullptr;
    PyObject* o = nullptr;
    {
      std::lock_guard<std::mutex> lk(mu_);
      for (size_t i = 0; i < free_.size(); ++i) {
        const uint64_t size = uint64_t(PyBytes_GET_SIZE(free_[i]));
        if (size >= total && size - total <= size / 8) {
          o = free_[i];
          free_[i] = free_.back();
          free_.pop_back();
          bytes_ -= size_t(size);
          break;
        }
      }
      if (!o) return nullptr;
    }
    Py_SET_SIZE(o, Py_ssize_t(total));
    PyBytes_AS_STRING(o)[total] = '\0';
    *slot_flags = flags | kFlagObject;
    slot_payload->assign(reinterpret_cast<const char*>(&o), sizeof o);
    return PyBytes_AS_STRING(o);
  }

  void abandon(uint32_t slot_flags, const std::string& slot_payload) override {
    dispose_message(slot_flags, slot_payload, 1);
  }

  // With the GIL: a large raw result of `size` bytes was taken; `missed`
  // if it came without a home (the pool had none to offer).
  void taken(size_t size, bool missed) {
    const size_t want = missed ? 2 : 1;
    for (size_t k = 0; k < want; ++k) {
      PyObject* o = PyBytes_FromStringAndSize(nullptr, Py_ssize_t(size));
      if (!o) {
        PyErr_Clear();
        return;
      }
      PyObject* evicted = nullptr;
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (free_.size() >= kMaxObjects || bytes_ + size > kMaxBytes) {
          if (free_.empty()) {
            evicted = o;  // larger than the whole budget
          } else {
            evicted = free_.front();
            free_.erase(free_.begin());
            bytes_ -= size_t(PyBytes_GET_SIZE(evicted));
          }
        }
        if (evicted != o) {
          free_.push_back(o);
          bytes_ += size;
        }
      }
      Py_XDECREF(evicted);
    }
  }

  // With the GIL, after the collector has stopped.
  void clear() {
    std::vector<PyObject*> objs;
    {
      std::lock_guard<std::mutex> lk(mu_);
      objs.swap(free_);
      bytes_ = 0;
    }
    for (PyObject* o : objs) Py_DECREF(o);
  }

 private:
  std::mutex mu_;
  std::vector<PyObject*> free_;
  size_t bytes_ = 0;
};

// ------------------------------------------------------------------ Engine

// The main-process side of one Server: the ledger of requests, the output
// ring and the collector thread that drains it.
class Engine {
 public:
  Engine(std::shared_ptr<PyRing> output, uint32_t capacity)
      : output_(std::move(output)), ledger_(capacity), collector_(*output_->ring, ledger_),
        completions_(size_t(capacity) * 4 + 256) {
    collector_.set_completions(&completions_);
    collector_.set_home(&pool_);
    ledger_.set_disposer(
        [](uint32_t flags, const std::string& payload) { dispose_message(flags, payload, 1); });
  }

  ~Engine() {
    output_->ring->close();
    py::gil_scoped_release nogil;
    collector_.join();
  }

  void start() {
    collector_.set_spin(g_collector_spin, g_collector_yields);
    collector_.start();
  }

  // The result every request in flight gets if the output ring is found corrupt.
  void set_failure(uint32_t flags, py::bytes payload) { collector_.set_failure(flags, std::string(payload)); }

  // Closes the output ring and waits for the collector to drain it.
  void stop() {
    output_->ring->close();
    py::gil_scoped_release nogil;
    collector_.join();
  }

  // Takes a slot and pushes the request.  Returns slot index >= 0, or -Status.
  int submit_until(PyRing& entry, py::handle payload, uint32_t flags, bool wait, int64_t deadline,
                   uint64_t aux, bool notify_async = false) {
    uint32_t idx;
    Ledger::AcquireStatus a = ledger_.acquire(false, 0, &idx);
    if (a == Ledger::AcquireStatus::full && wait) {
      wait_interruptibly(
          deadline,
          [&](int64_t until) {
            a = ledger_.acquire(true, until, &idx);
            return a != Ledger::AcquireStatus::timeout;
          },
          [] {});
    }
    switch (a) {
      case Ledger::AcquireStatus::ok: break;
      case Ledger::AcquireStatus::full: return -kBacklogFull;
      case Ledger::AcquireStatus::timeout: return -kBacklogTimeout;
      case Ledger::AcquireStatus::closed: return -kClosed;
    }
    PayloadRef ref;
    try {
      flags = prepare_payload(payload, flags, ref);
    } catch (...) {
      ledger_.release(idx);
      throw;
    }
    OutMessage m{ledger_.token(idx), flags, aux, ref.parts, ref.nparts};
    add_refs(flags, ref.handle, entry.object_refs);
    ledger_.slot(idx).notify_async = notify_async;
    PushStatus st = push_with_gil_rules(*entry.ring, &m, 1, deadline, nullptr);
    if (st != PushStatus::ok) {
      drop_refs(flags, ref.handle, entry.object_refs);
      ledger_.slot(idx).notify_async = false;
      ledger_.release(idx);
      return st == PushStatus::closed ? -kClosed : -kPushTimeout;
    }
    return int(idx);
  }

  // Returns (flags, payload) of a done slot and frees it.
  py::tuple take(uint32_t idx) {
    check(idx);
    if (!ledger_.is_done(idx)) throw std::logic_error("take() on a request that is not done");
    Ledger::Slot& s = ledger_.slot(idx);
    py::object obj = take_payload(s.flags, s.payload);
    uint32_t flags = s.flags;
    ledger_.release(idx);
    note_taken(flags, obj);
    return py::make_tuple(flags, obj);
  }

  // With the GIL, for every result handed to Python: a large raw result asks
  // the pool for a home for the next one.
  void note_taken(uint32_t flags, const py::object& obj) {
    if (!(flags & kFlagRaw) || !PyBytes_Check(obj.ptr())) return;
    const size_t size = size_t(PyBytes_GET_SIZE(obj.ptr()));
    if (size >= kLargePayloadBytes) pool_.taken(size, !(flags & kFlagObject));
  }

  // The caller gives up on a request; its result is dropped whenever it comes.
  void abandon(uint32_t idx) {
    check(idx);
    if (!ledger_.abandon(idx)) ledger_.discard(idx);  // already done: drop the result now
  }

  // submit + wait + take in one crossing: returns (status, flags, payload).
  // On RESULT_TIMEOUT the payload is the seconds spent enqueueing.
  py::tuple call(PyRing& entry, py::handle payload, uint32_t flags, double timeout,
                 bool backpressure, int spin) {
    const int64_t t0 = now_ns();
    const int64_t deadline = deadline_after(timeout);
    int r = submit_until(entry, payload, flags, !backpressure, deadline, 0);
    if (r < 0) return py::make_tuple(-r, 0, py::none());
    uint32_t idx = uint32_t(r);
    const int64_t t_enqueued = now_ns();
    bool ok = wait_interruptibly(
        deadline, [&](int64_t until) { return ledger_.wait(idx, until, spin); },
        [&] { abandon(idx); });
    if (!ok) {
      abandon(idx);
      return py::make_tuple(int(kResultTimeout), 0, double(t_enqueued - t0) / 1e9);
    }
    py::tuple t = take(idx);
    return py::make_tuple(int(kOk), t[0], t[1]);
  }

  // ---- asyncio: requests whose completion is reported on the CompletionQueue.

  // Takes a slot without waiting and pushes the request.  Returns
  // (status, token): OK with the request's token, or BACKLOG_FULL / CLOSED /
  // PUSH_TIMEOUT with token 0.
  py::tuple submit_async(PyRing& entry, py::handle payload, uint32_t flags) {
    int r = submit_until(entry, payload, flags, false, kForever, 0, true);
    if (r < 0) return py::make_tuple(-r, 0);
    return py::make_tuple(int(kOk), ledger_.token(uint32_t(r)));
  }

  // Tokens of async requests finished since the last call (clears the eventfd).
  std::vector<uint64_t> drain_async() {
    std::vector<uint64_t> out;
    completions_.drain(out);
    return out;
  }

  // (flags, payload) of a finished async request; frees its slot.
  py::tuple take_token(uint64_t token) {
    uint32_t idx = slot_of(token);
    return take(idx);
  }

  // The async caller gave up (cancelled, timed out).
  void abandon_token(uint64_t token) { abandon(slot_of(token)); }

  int async_fd() const { return completions_.fd(); }

  Ledger& ledger() { return ledger_; }
  uint32_t backlog() const { return ledger_.backlog(); }
  uint32_t capacity() const { return ledger_.capacity(); }
  void close() { ledger_.close(); }
  void fail_pending(uint32_t flags, py::bytes payload) {
    std::vector<uint64_t> tokens = ledger_.fail_pending(flags, std::string(payload));
    completions_.publish(tokens);
  }
  bool collector_running() const { return collector_.running(); }
  uint64_t delivered() const { return collector_.delivered(); }

  py::list snapshot() const {
    py::list out;
    for (const auto& e : ledger_.snapshot()) {
      static const char* names[] = {"free", "pending", "done", "abandoned"};
      out.append(py::make_tuple(e.idx, names[e.state & 3], double(e.age_ns) / 1e9));
    }
    return out;
  }

 private:
  void check(uint32_t idx) const {
    if (idx >= ledger_.capacity()) throw std::out_of_range("bad request slot");
  }
  uint32_t slot_of(uint64_t token) {
    uint32_t idx = uint32_t(token & 0xffffffffu);
    check(idx);
    if (ledger_.token(idx) != token) throw std::logic_error("stale request token");
    return idx;
  }

  std::shared_ptr<PyRing> output_;
  BytesPool pool_;  // before the collector: it outlives the collector's thread
  Ledger ledger_;
  Collector collector_;
  CompletionQueue completions_;
};


// ------------------------------------------------------------------ StreamWindow

class PyStreamWindow {
 public:
  PyStreamWindow(Engine& engine, std::shared_ptr<PyRing> entry, double item_timeout)
      : engine_(engine), entry_(std::move(entry)),
        win_(engine.ledger(), *entry_->ring,
             item_timeout > 1e9 ? kForever : int64_t(item_timeout * 1e9)) {}

  // Sends payloads[0..n) with the same flags; returns (accepted, status),
  // status being OK or the reason the rest was not accepted.
  py::tuple submit(py::list payloads, uint32_t flags, bool wait, double timeout) {
    const size_t n = payloads.size();
    std::unique_ptr<PayloadRef[]> refs(new PayloadRef[n ? n : 1]);
    std::vector<OutMessage> msgs(n);
    for (size_t i = 0; i < n; ++i) {
      msgs[i] = OutMessage{0, prepare_payload(payloads[i], flags, refs[i]), 0, refs[i].parts,
                           refs[i].nparts};
      add_refs(flags, refs[i].handle, entry_->object_refs);
    }
    // First without waiting, keeping the GIL: a feeder thread that gave the
    // GIL up on every item would hand it to the draining thread and back,
    // two thread switches per item.  Wait (without the GIL) only if needed.
    StreamWindow::SubmitStatus st;
    const int64_t deadline = deadline_after(timeout);
    size_t k = win_.submit(msgs.data(), n, wait, deadline, &st, false);
    // Retry what a blocking call would have waited for: a slot for the
    // first message only (later ones never wait), or ring space.
    const bool retry = k < n && ((st == StreamWindow::SubmitStatus::full && wait && k == 0) ||
                                 st == StreamWindow::SubmitStatus::timeout);
    if (retry) {
      py::gil_scoped_release nogil;
      k += win_.submit(msgs.data() + k, n - k, wait, deadline, &st);
    }
    for (size_t i = k; i < n; ++i) drop_refs(flags, refs[i].handle, entry_->object_refs);
    int status = st == StreamWindow::SubmitStatus::ok        ? kOk
                 : st == StreamWindow::SubmitStatus::full    ? kBacklogFull
                 : st == StreamWindow::SubmitStatus::timeout ? kBacklogTimeout
                                                             : kClosed;
    return py::make_tuple(k, status);
  }

  void add_local() { win_.add_local(); }

  // Returns [(outcome, flags, payload), ...] for the ready prefix of the
  // window (waiting for its head), or [] once the window is finished and empty.
  // With wait false: only what is ready now, [] if the head is not ready.
  py::list drain(size_t max, int spin, bool wait) {
    out_.clear();
    if (!wait) {
      win_.drain(max, 0, now_ns(), out_);  // a passed deadline: never sleeps
      if (!out_.empty() && out_[0].outcome == StreamWindow::kPending) out_.clear();
    } else {
      wait_interruptibly(
          kForever,
          [&](int64_t until) {
            out_.clear();
            win_.drain(max, spin, until, out_);
            return out_.empty() || out_[0].outcome != StreamWindow::kPending;
          },
          [] {});
    }
    py::list res;
    for (const auto& d : out_) {
      if (d.outcome == StreamWindow::kEnd) break;
      if (d.outcome == StreamWindow::kReady) {
        Ledger::Slot& s = engine_.ledger().slot(d.slot);
        py::object obj = take_payload(s.flags, s.payload);
        uint32_t f = s.flags;
        engine_.ledger().release(d.slot);
        engine_.note_taken(f, obj);
        res.append(py::make_tuple(int(d.outcome), f, std::move(obj)));
      } else {
        res.append(py::make_tuple(int(d.outcome), 0, py::none()));
      }
    }
    return res;
  }

  void finish() { win_.finish(); }
  void close() {
    py::gil_scoped_release nogil;
    win_.close();
  }
  size_t size() const { return win_.size(); }

 private:
  Engine& engine_;
  std::shared_ptr<PyRing> entry_;
  StreamWindow win_;
  std::vector<StreamWindow::Drained> out_;
};

// ------------------------------------------------------------------ EnsembleRouter

class PyEnsembleRouter {
 public:
  PyEnsembleRouter(std::shared_ptr<PyRing> input, std::vector<std::shared_ptr<PyRing>> members,
                   std::shared_ptr<PyRing> join, std::shared_ptr<PyRing> output, bool fail_fast)
      : input_(std::move(input)), members_(std::move(members)), join_(std::move(join)),
        output_(std::move(output)) {
    std::vector<Ring*> rings;
    for (auto& m : members_) rings.push_back(m->ring.get());
    router_ = std::make_unique<EnsembleRouter>(*input_->ring, rings, *join_->ring, *output_->ring,
                                               fail_fast);
    router_->set_disposer(
        [](const OwnedMessage& m, int count) { dispose_message(m.flags, m.payload, count); });
  }
  ~PyEnsembleRouter() {
    py::gil_scoped_release nogil;
    router_.reset();
  }
  void start() { router_->start(); }
  void join_fanout() {
    py::gil_scoped_release nogil;
    router_->join_fanout();
  }
  void join_fanin() {
    py::gil_scoped_release nogil;
    router_->join_fanin();
  }
  EnsembleRouter& router() { return *router_; }

 private:
  std::shared_ptr<PyRing> input_;
  std::vector<std::shared_ptr<PyRing>> members_;
  std::shared_ptr<PyRing> join_, output_;
  std::unique_ptr<EnsembleRouter> router_;
};

// ------------------------------------------------------------------ Supervisor

class PySupervisor {
 public:
  Supervisor sup;

  // specs: [(argv, [(fd, child_fd)], cpus, env)], env being ["KEY=VALUE"] or [] to inherit.
  std::vector<int> spawn(const std::vector<std::tuple<std::vector<std::string>,
                                                      std::vector<std::pair<int, int>>,
                                                      std::vector<int>, std::vector<std::string>>>& specs) {
    std::vector<SpawnSpec> ss;
    for (const auto& [argv, fds, cpus, env] : specs) ss.push_back(SpawnSpec{argv, fds, cpus, env});
    std::vector<pid_t> pids;
    {
      py::gil_scoped_release nogil;
      pids = sup.spawn(ss);
    }
    return std::vector<int>(pids.begin(), pids.end());
  }

  // Returns the raw wait status, or None on timeout.
  py::object wait_exit(int pid, py::object timeout) {
    int st = 0;
    bool ok;
    int64_t d = deadline_from(timeout);
    {
      py::gil_scoped_release nogil;
      ok = sup.wait_exit(pid, d, &st);
    }
    if (!ok) return py::none();
    return py::int_(st);
  }

  py::object exit_status(int pid) {
    int st = 0;
    if (!sup.has_exited(pid, &st)) return py::none();
    return py::int_(st);
  }
};

// ------------------------------------------------------------------ Guardian

class PyGuardian {
 public:
  explicit PyGuardian(PySupervisor& sup) : g_(sup.sup) {}
  ~PyGuardian() {
    py::gil_scoped_release nogil;
    g_.stop();
  }

  // specs as for Supervisor.spawn; pids: the running workers, per index.
  uint32_t add(const std::string& label, std::vector<std::string> names, uint32_t max_restarts,
               double window, std::shared_ptr<PyRing> input, std::shared_ptr<PyRing> output,
               std::shared_ptr<PyRing> control, std::shared_ptr<PyClaimTable> claims,
               const std::vector<std::tuple<std::vector<std::string>, std::vector<std::pair<int, int>>,
                                            std::vector<int>, std::vector<std::string>>>& specs,
               std::vector<int> pids) {
    GuardedServlet s;
    s.label = label;
    s.names = std::move(names);
    s.max_restarts = max_restarts;
    s.window_ns = int64_t(window * 1e9);
    s.input = input->ring.get();
    s.output = output->ring.get();
    s.control = control->ring.get();
    s.claims = claims->table.get();
    for (const auto& [argv, fds, cpus, env] : specs) s.specs.push_back(SpawnSpec{argv, fds, cpus, env});
    s.pids.assign(pids.begin(), pids.end());
    keep_rings_.insert(keep_rings_.end(), {input, output, control});
    keep_claims_.push_back(claims);
    return g_.add(std::move(s));
  }
  void start() { g_.start(); }
  void stop() { g_.stop(); }
  py::dict info(uint32_t i) {
    Guardian::Info inf = g_.info(i);
    py::dict d;
    d["restarts"] = inf.restarts;
    d["crashes"] = inf.crashes;
    d["pids"] = std::vector<int>(inf.pids.begin(), inf.pids.end());
    d["failed"] = inf.failed;
    return d;
  }

 private:
  // Declared first so they are destroyed after the guardian (which uses them).
  std::vector<std::shared_ptr<PyRing>> keep_rings_;
  std::vector<std::shared_ptr<PyClaimTable>> keep_claims_;
  Guardian g_;
};

int memfd_from_bytes(const std::string& name, py::bytes data) {
  std::string s = data;
  int fd = create_memfd(name, s.size());
  size_t off = 0;
  while (off < s.size()) {
    ssize_t w = pwrite(fd, s.data() + off, s.size() - off, off_t(off));
    if (w <= 0) {
      close(fd);
      throw std::runtime_error("writing bootstrap memfd failed");
    }
    off += size_t(w);
  }
  return fd;
}

// In a freshly spawned worker: die with the parent.  Returns false if the
// parent is already gone (getppid() no longer matches).
bool bind_to_parent(int expected_ppid) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  return getppid() == expected_ppid;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "mpserver's C++ core: shared-memory rings, request ledger, collector, supervisor.";
  g_main_thread = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();

  m.attr("FLAG_OBJECT") = kFlagObject;
  m.attr("FLAG_ERROR") = kFlagError;
  m.attr("FLAG_CONTROL") = kFlagControl;
  m.attr("FLAG_ENSEMBLE") = kFlagEnsemble;
  m.attr("FLAG_CRASH") = kFlagCrash;
  py::class_<OwnedBytes>(m, "OwnedBytes", py::buffer_protocol(),
                         "A received out-of-band pickle's bytes (writable buffer).")
      .def_buffer([](OwnedBytes& b) {
        return py::buffer_info(b.data.data(), 1, py::format_descriptor<uint8_t>::format(), 1,
                               {py::ssize_t(b.data.size())}, {py::ssize_t(1)}, false);
      })
      .def("__len__", [](const OwnedBytes& b) { return b.data.size(); });
  m.attr("FLAG_RAW") = kFlagRaw;
  m.attr("FLAG_OOB") = kFlagOob;
  m.attr("LARGE_PAYLOAD_BYTES") = kLargePayloadBytes;
  m.def("oob_sections", &oob_sections, py::arg("payload"),
        "Memoryviews of the pickle and its buffers inside an out-of-band message.");
  m.attr("PART_MISSING") = kPartMissing;
  m.attr("COMPOSITE_MAGIC") = kCompositeMagic;
  m.attr("MAX_ENSEMBLE_MEMBERS") = kMaxEnsembleMembers;
  m.attr("OK") = int(kOk);
  m.attr("BACKLOG_FULL") = int(kBacklogFull);
  m.attr("BACKLOG_TIMEOUT") = int(kBacklogTimeout);
  m.attr("RESULT_TIMEOUT") = int(kResultTimeout);
  m.attr("CLOSED") = int(kClosed);
  m.attr("PUSH_TIMEOUT") = int(kPushTimeout);

  py::register_exception<RingCorrupt>(m, "RingCorrupt");

  py::class_<PyRing, std::shared_ptr<PyRing>>(m, "Ring")
      .def_static("create",
                  [](size_t capacity, const std::string& name) {
                    return std::make_shared<PyRing>(Ring::create(capacity, name));
                  },
                  py::arg("capacity"), py::arg("name") = "mpserver-ring")
      .def_static("attach", [](int fd) { return std::make_shared<PyRing>(Ring::attach(fd)); })
      .def_property_readonly("fd", [](PyRing& r) { return r.ring->fd(); })
      .def_property_readonly("capacity", [](PyRing& r) { return r.ring->capacity(); })
      .def_property_readonly("max_chunk", [](PyRing& r) { return r.ring->max_chunk(); })
      .def_property_readonly("closed", [](PyRing& r) { return r.ring->closed(); })
      .def_property_readonly("empty", [](PyRing& r) { return r.ring->empty(); })
      .def_property_readonly("bytes_used", [](PyRing& r) { return r.ring->bytes_used(); })
      .def_readwrite("object_refs", &PyRing::object_refs,
                     "References each object message pushed here takes (its number of readers).")
      .def("close", [](PyRing& r) { r.ring->close(); })
      .def("abort", [](PyRing& r) { r.ring->abort(); },
           "Close and make consumers stop at once, leaving unread messages behind.")
      .def_property_readonly("finished", [](PyRing& r) { return r.ring->finished(); })
      .def("push", &PyRing::push, py::arg("id"), py::arg("flags"), py::arg("payload"),
           py::arg("aux") = 0, py::arg("timeout") = py::none())
      .def("push_many", &PyRing::push_many, py::arg("items"), py::arg("aux") = 0)
      .def("gather", &PyRing::gather, py::arg("max_items") = 1, py::arg("wait_time") = 0.0,
           py::arg("idle_timeout") = py::none());

  py::class_<Engine>(m, "Engine")
      .def(py::init<std::shared_ptr<PyRing>, uint32_t>(), py::arg("output"), py::arg("capacity"))
      .def("start", &Engine::start)
      .def("stop", &Engine::stop)
      .def("call", &Engine::call, py::arg("ring"), py::arg("payload"), py::arg("flags"),
           py::arg("timeout"), py::arg("backpressure"), py::arg("spin") = 0)
      .def_property_readonly("backlog", &Engine::backlog)
      .def_property_readonly("capacity", &Engine::capacity)
      .def_property_readonly("collector_running", &Engine::collector_running)
      .def_property_readonly("delivered", &Engine::delivered)
      .def("close", &Engine::close)
      .def("fail_pending", &Engine::fail_pending)
      .def("set_failure", &Engine::set_failure)
      .def("submit_async", &Engine::submit_async)
      .def("drain_async", &Engine::drain_async)
      .def("take_token", &Engine::take_token)
      .def("abandon_token", &Engine::abandon_token)
      .def_property_readonly("async_fd", &Engine::async_fd)
      .def("snapshot", &Engine::snapshot);

  py::class_<PyStreamWindow>(m, "StreamWindow")
      .def(py::init<Engine&, std::shared_ptr<PyRing>, double>(), py::arg("engine"),
           py::arg("ring"), py::arg("item_timeout"), py::keep_alive<1, 2>())
      .def("submit", &PyStreamWindow::submit)
      .def("add_local", &PyStreamWindow::add_local)
      .def("drain", &PyStreamWindow::drain, py::arg("max") = 256, py::arg("spin") = 0,
           py::arg("wait") = true)
      .def("finish", &PyStreamWindow::finish)
      .def("close", &PyStreamWindow::close)
      .def("__len__", &PyStreamWindow::size);

  py::class_<PyEnsembleRouter>(m, "EnsembleRouter")
      .def(py::init<std::shared_ptr<PyRing>, std::vector<std::shared_ptr<PyRing>>,
                    std::shared_ptr<PyRing>, std::shared_ptr<PyRing>, bool>(),
           py::arg("input"), py::arg("members"), py::arg("join"), py::arg("output"),
           py::arg("fail_fast"))
      .def("start", &PyEnsembleRouter::start)
      .def("join_fanout", &PyEnsembleRouter::join_fanout)
      .def("join_fanin", &PyEnsembleRouter::join_fanin)
      .def_property_readonly("emitted", [](PyEnsembleRouter& r) { return r.router().emitted(); })
      .def_property_readonly("dropped", [](PyEnsembleRouter& r) { return r.router().dropped(); })
      .def_property_readonly("open_entries",
                             [](PyEnsembleRouter& r) { return r.router().open_entries(); });
  m.def("_fuzz_frames", [](py::bytes data) {
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
  }, "Fuzzing entry: consume arbitrary bytes as ring frames.");
  m.def("_fuzz_composite", [](py::bytes data) {
    // Walks an arbitrary composite payload (and nested ones) with the same
    // bounds-checked parser the bindings use; returns (parts, well_formed).
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
  }, "Fuzzing entry: parse arbitrary bytes as an ensemble composite.");
  m.def("compose_ensemble", [](std::vector<uint32_t> flags, std::vector<py::bytes> parts,
                               uint32_t finished) {
    std::vector<std::string> ps(parts.begin(), parts.end());
    return py::bytes(compose(flags, ps, finished));
  }, "Builds an ensemble composite payload (for tests).");

  py::class_<PySupervisor>(m, "Supervisor")
      .def(py::init<>())
      .def("spawn", &PySupervisor::spawn)
      .def("wait_exit", &PySupervisor::wait_exit, py::arg("pid"), py::arg("timeout") = py::none())
      .def("exit_status", &PySupervisor::exit_status)
      .def("kill", [](PySupervisor& s, int pid, int sig) { s.sup.kill(pid, sig); });

  py::class_<PyClaimTable, std::shared_ptr<PyClaimTable>>(m, "ClaimTable")
      .def_static("create",
                  [](uint32_t workers, uint32_t slots) {
                    return std::make_shared<PyClaimTable>(PyClaimTable{ClaimTable::create(workers, slots)});
                  })
      .def_static("attach",
                  [](int fd) { return std::make_shared<PyClaimTable>(PyClaimTable{ClaimTable::attach(fd)}); })
      .def_property_readonly("fd", [](PyClaimTable& t) { return t.table->fd(); })
      .def("held", [](PyClaimTable& t, uint32_t w) { return t.table->held(w); })
      .def("take", [](PyClaimTable& t, uint32_t w) { return t.table->take(w); },
           "Returns and clears worker w's claims as [(id, aux)] (the worker must be gone).");
  m.def("bind_claims",
        [](std::shared_ptr<PyClaimTable> t, uint32_t worker) {
          if (t && worker >= t->table->workers()) throw std::out_of_range("no such worker");
          t_claims = t ? t->table.get() : nullptr;  // the caller keeps t alive while bound
          t_claim_worker = worker;
        },
        py::arg("table").none(true), py::arg("worker") = 0,
        "Makes this thread's gather() claim and push() release items in `table` for `worker`.");

  py::class_<PyGuardian>(m, "Guardian")
      .def(py::init<PySupervisor&>(), py::keep_alive<1, 2>())
      .def("add", &PyGuardian::add)
      .def("start", &PyGuardian::start)
      .def("stop", &PyGuardian::stop)
      .def("info", &PyGuardian::info);

  m.def("memfd_from_bytes", &memfd_from_bytes);
  m.def("set_signal_checks", [](bool on) { g_signal_checks = on; },
        "Whether waits on the main thread wake every 50 ms to run Python signal handlers.");
  m.def("set_spin", [](int worker, int collector, int worker_yields, int collector_yields) {
    g_worker_spin = worker;
    g_collector_spin = collector;
    g_worker_yields = worker_yields;
    g_collector_yields = collector_yields;
  }, py::arg("worker"), py::arg("collector"), py::arg("worker_yields") = 0,
  py::arg("collector_yields") = 100,
  "Before sleeping: busy-wait rounds, then sched_yield rounds, in workers' gather and in the collector.");
  m.def("bind_to_parent", &bind_to_parent);
  m.def(
      "keep_heap",
      [](size_t mmap_threshold, size_t trim_threshold) {
        // glibc maps every allocation above M_MMAP_THRESHOLD (128 KiB until a
        // mapped block is freed) separately and returns freed heap tops above
        // M_TRIM_THRESHOLD to the kernel: a process that receives one large
        // payload after another then pays page faults on every byte.  Raising
        // both lets the heap reuse the memory of the previous payload.
        bool ok = mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)) == 1;
        ok = mallopt(M_TRIM_THRESHOLD, int(trim_threshold)) == 1 && ok;
        return ok;
      },
      py::arg("mmap_threshold"), py::arg("trim_threshold"),
      "Tunes glibc malloc so that large payload buffers are reused, not re-mapped per item.");
}
