#include "ring.hpp"

#include <atomic>
#include <cstring>
#include <mutex>

#include "../cpp/batcher.hpp"
#include "../cpp/chunk.hpp"
#include "../cpp/guardian.hpp"
#include "../cpp/spin_governor.hpp"
#include "../cpp/wire.hpp"
#include "gil.hpp"
#include "meter.hpp"
#include "payload.hpp"

namespace mpb {

using namespace mps;

SpinSettings g_spin;

namespace {

// The claim section of the worker running on this thread (a worker process's
// main thread, or a ThreadServlet thread); null elsewhere.
thread_local ClaimTable* t_claims = nullptr;
thread_local uint32_t t_claim_worker = 0;
// The server's cancel board, for a worker whose input carries request tokens
// (cancel_board.hpp); null elsewhere.
thread_local CancelBoard* t_board = nullptr;

// A worker process's claims may also be released by its chunk watcher
// thread (python/mpserver/_chunking.py), which hands back the items of a
// stuck chunk: from then on every claim and release of the process goes
// through this mutex (a section has one writer at a time, as claims.hpp
// requires).  g_claims / g_claim_worker: the section of the process's
// serving thread, for the watcher.
std::mutex g_claims_mu;
std::atomic<bool> g_claims_shared{false};
ClaimTable* g_claims = nullptr;
uint32_t g_claim_worker = 0;

bool claim_item(uint64_t id, uint64_t aux, int64_t now) {
  if (!t_claims) return false;
  if (!g_claims_shared.load(std::memory_order_relaxed)) return t_claims->claim(t_claim_worker, id, aux, now);
  std::lock_guard<std::mutex> g(g_claims_mu);
  return t_claims->claim(t_claim_worker, id, aux, now);
}

int64_t release_item(uint64_t id) {
  if (!t_claims) return 0;
  if (!g_claims_shared.load(std::memory_order_relaxed)) return t_claims->release(t_claim_worker, id);
  std::lock_guard<std::mutex> g(g_claims_mu);
  return t_claims->release(t_claim_worker, id);
}

// The payload of an item skipped because its caller had given up: a crash
// report of kind "dropped" (guardian.hpp's format), passed on like any error
// until the collector frees the abandoned slot.
const std::string& dropped_report() {
  static const std::string report =
      Guardian::crash_payload("dropped", GuardedServlet{}, 0, 0, -1,
                              "was dropped before any worker started it: its caller had given up");
  return report;
}

// A worker pushed a message with id `id` at `now`: if it answers an item
// the worker holds, the claim ends and the worker's record counts the answer
// and how long the item took.  (Other pushes of a worker — its reports and
// log records on the control ring — hold no claim and count nothing.)
void answered(uint64_t id, uint32_t flags, int64_t now) {
  const int64_t since = release_item(id);
  MeterRecord* r = t_meter;
  if (!r || !since) return;
  bump(r->own[kWorkerOut]);
  if (flags & kFlagError) bump(r->own[kWorkerErrors]);
  observe_time(r->times, now - since);
}

// The clock, read only when a worker's bindings need it.
int64_t worker_clock() { return (kMetering && t_meter) ? now_ns() : 0; }

int status_of(PushStatus st) {
  return int(st == PushStatus::ok       ? Status::ok
             : st == PushStatus::closed ? Status::closed
                                        : Status::push_timeout);
}

// Collects a gathered batch.  Large messages are copied from the ring
// straight into the Python object the worker gets (new_direct_object);
// taking the GIL inside the consumer lock is safe (gil.hpp).
struct GatherSink : MessageSink {
  struct Item {
    uint64_t id;
    uint32_t flags;
    uint64_t aux;
    size_t off, len;
    PyObject* direct;  // a large message copied straight into its Python object
    bool dropped;      // its caller had given up: its bytes are skipped
  };
  std::vector<Item> items;
  std::string buf;
  uint32_t dropped_flags = 0;  // of the dropped message being read
  std::string dropped_refs;    // its payload, if it holds object references
  char* dest = nullptr;        // write position inside items.back().direct

  ~GatherSink() override {  // runs with the GIL held (end of gather())
    for (Item& it : items) Py_XDECREF(it.direct);
  }
  size_t skipped = 0;      // items dropped because nobody waits for them
  size_t chunk_items = 0;  // items inside the chunks gathered (beyond one per chunk)
  int64_t chunk_since = 0;
  bool chunk_claimed = false;

  // A chunk's tokens are in its first frame (its header is far smaller than
  // a frame): each is claimed there, still inside the consumer's critical
  // section, exactly as a single item is claimed in begin().
  void claim_chunk(const Item& it) {
    if (it.len < sizeof(ChunkHeader)) return;
    ChunkHeader h;
    std::memcpy(&h, buf.data() + it.off, sizeof h);
    if (h.count == 0 || h.count > kMaxChunkItems) return;  // gather() reports it as corrupt
    if (it.len < chunk_head_bytes(h.count)) return;
    chunk_claimed = true;
    const char* tokens = buf.data() + it.off + sizeof h;
    for (uint32_t i = 0; i < h.count; ++i) {
      uint64_t t;
      std::memcpy(&t, tokens + size_t(i) * 8, 8);
      (void)claim_item(t, it.aux, chunk_since);
    }
    chunk_items += h.count - 1;
    if (MeterRecord* r = t_meter) {
      bump(r->own[kWorkerIn], h.count);
      if (pushed_at) observe_time(r->waits, chunk_since - pushed_at, h.count);
    }
  }
  void release_chunk(const Item& it) {
    const ChunkView v = parse_chunk(buf.data() + it.off, it.len);
    for (uint32_t i = 0; i < v.count; ++i) (void)release_item(v.token(i));
    chunk_items -= v.count - 1;
  }

  void begin(uint64_t id, uint32_t flags, uint64_t aux, uint64_t total) override {
    const int64_t now = (t_claims || t_meter) ? now_ns() : 0;
    if (flags & kFlagChunk) {  // claimed in append(), once its tokens are here
      items.push_back({id, flags, aux, buf.size(), 0, nullptr, false});
      chunk_since = now;
      chunk_claimed = false;
      dest = nullptr;
      buf.reserve(buf.size() + total);
      return;
    }
    if (MeterRecord* r = t_meter) {
      bump(r->own[kWorkerIn]);
      if (flags & kFlagError) bump(r->own[kWorkerPassed]);
      if (pushed_at) observe_time(r->waits, now - pushed_at);
    }
    if (t_board && !(flags & kFlagError) && t_board->take_if_abandoned(id)) {
      ++skipped;
      if (t_meter) bump(t_meter->own[kWorkerSkipped]);
      // Work for nobody: not claimed, not decoded, not run; a "dropped"
      // error goes on in its place (the collector frees the slot).  What an
      // object message refers to is released at its end.
      items.push_back({id, kFlagError | kFlagCrash, aux, buf.size(), 0, nullptr, true});
      dropped_flags = flags;
      dropped_refs.clear();
      dest = nullptr;
      return;
    }
    // Claimed while the ring still holds it: a death from here on is seen.
    (void)claim_item(id, aux, now);
    PyObject* direct = total >= kLargePayloadBytes ? new_direct_object(flags, total) : nullptr;
    items.push_back({id, flags, aux, buf.size(), 0, direct, false});
    if (direct) {
      dest = PyBytes_Check(direct) ? PyBytes_AS_STRING(direct) : PyByteArray_AS_STRING(direct);
    } else {
      dest = nullptr;
      buf.reserve(buf.size() + total);
    }
  }
  void append(const char* d, size_t n) override {
    Item& it = items.back();
    if (it.flags & kFlagChunk) {
      buf.append(d, n);
      it.len += n;
      if (!chunk_claimed) claim_chunk(it);
      return;
    }
    if (it.dropped) {
      if (dropped_flags & (kFlagObject | kFlagEnsemble)) dropped_refs.append(d, n);
      return;
    }
    if (it.direct)
      std::memcpy(dest + it.len, d, n);
    else
      buf.append(d, n);
    it.len += n;
  }
  void end() override {
    Item& it = items.back();
    if (!it.dropped) return;
    dispose_message(dropped_flags, dropped_refs, 1);  // takes the GIL (safe here: gil.hpp)
    buf.append(dropped_report());
    it.len = dropped_report().size();
  }
  void abort() override {
    Item& it = items.back();
    if (it.flags & kFlagChunk) {
      if (chunk_claimed) release_chunk(it);
    } else if (!it.dropped && t_claims) {
      (void)release_item(it.id);
    }
    if (it.direct) {
      py::gil_scoped_acquire gil;
      Py_DECREF(it.direct);
    }
    buf.resize(it.off);
    items.pop_back();
  }
};

}  // namespace

int PyRing::push(uint64_t id, uint32_t flags, py::handle payload, uint64_t aux, py::object timeout) {
  PayloadRef ref;
  prepare_payload(payload, flags, ref);
  OutMessage m{id, flags, aux, ref.parts, ref.nparts};
  add_refs(flags, ref.handle, object_refs);
  const int64_t now = worker_clock();  // the answer's time, and the frame's stamp
  PushStatus st = push_with_gil_rules(*ring, &m, 1, deadline_from(timeout), nullptr, now);
  if (st != PushStatus::ok) drop_refs(flags, ref.handle, object_refs);
  if (!(flags & kFlagControl)) answered(id, flags, now);  // a report or log record answers nothing
  return status_of(st);
}

int PyRing::push_many(py::list items, uint64_t aux) {
  const size_t n = items.size();
  std::vector<PayloadRef> refs(n);
  std::vector<OutMessage> msgs(n);
  std::vector<py::tuple> keep(n);
  for (size_t i = 0; i < n; ++i) {
    keep[i] = items[i].cast<py::tuple>();
    uint64_t id = keep[i][0].cast<uint64_t>();
    uint32_t flags = keep[i][1].cast<uint32_t>();
    prepare_payload(keep[i][2], flags, refs[i]);
    msgs[i] = OutMessage{id, flags, aux, refs[i].parts, refs[i].nparts};
  }
  for (size_t i = 0; i < n; ++i) add_refs(msgs[i].flags, refs[i].handle, object_refs);
  size_t written = 0;
  const int64_t now = worker_clock();  // the answers' time, and the frames' stamp
  PushStatus st = push_with_gil_rules(*ring, msgs.data(), n, kForever, &written, now);
  for (size_t i = written; i < n; ++i) drop_refs(msgs[i].flags, refs[i].handle, object_refs);
  for (size_t i = 0; i < n; ++i) answered(msgs[i].id, msgs[i].flags, now);
  return status_of(st);
}

int PyRing::push_chunk(py::sequence ids, py::bytes status, py::bytes blob, uint64_t aux) {
  const size_t n = py::len(ids);
  const std::string_view st = status;
  if (n == 0 || n > kMaxChunkItems || st.size() != n)
    throw py::value_error("a chunk needs 1..4096 ids and one status each");
  std::vector<uint64_t> tokens(n);
  for (size_t i = 0; i < n; ++i) tokens[i] = ids[i].cast<uint64_t>();
  const std::string head =
      chunk_head(tokens.data(), reinterpret_cast<const uint8_t*>(st.data()), uint32_t(n));
  const std::string_view body = blob;
  const Slice parts[2] = {{head.data(), head.size()}, {body.data(), body.size()}};
  OutMessage m{tokens[0], kFlagChunk, aux, parts, 2};
  const int64_t now = worker_clock();
  PushStatus ps = push_with_gil_rules(*ring, &m, 1, kForever, nullptr, now);
  for (size_t i = 0; i < n; ++i) answered(tokens[i], st[i] ? kFlagError : 0, now);
  return status_of(ps);
}

py::object PyRing::gather(size_t max_items, double wait_time, py::object idle_timeout) {
  GatherSink sink;
  BatchPolicy policy;
  // A worker spins before sleeping only while its items come close together.
  thread_local SpinGovernor governor(0, 0);
  governor.configure(g_spin.worker_spin, g_spin.worker_yields);
  policy.spin = governor.spin();
  policy.yields = governor.yields();
  policy.max_items = max_items;
  policy.wait_ns = int64_t(wait_time * 1e9);
  size_t n = 0;
  const int64_t t0 = now_ns();
  wait_interruptibly(deadline_from(idle_timeout), [&](int64_t until) {
    n = mps::gather(*ring, sink, policy, until);
    return n > 0 || ring->finished();
  });
  if (policy.wait_ns == 0) governor.waited(now_ns() - t0);
  if (n == 0) {
    if (ring->finished()) return py::none();
    return py::list();
  }
  if (MeterRecord* r = t_meter; r && n > sink.skipped) {
    if (sink.chunk_items) {  // a chunk's items go to user code one by one
      const uint64_t calls = n - sink.skipped + sink.chunk_items;
      bump(r->own[kWorkerBatches], calls);
      bump(r->sizes.bucket[size_bucket(1)], calls);
      bump(r->sizes.sum, calls);
    } else {
      bump(r->own[kWorkerBatches]);
      observe_size(r->sizes, n - sink.skipped);
    }
  }
  py::list out(n);
  for (size_t i = 0; i < n; ++i) {
    GatherSink::Item& it = sink.items[i];
    py::object payload;
    if (it.flags & kFlagChunk) {  // (tokens, flags, aux, pickle of the values)
      const ChunkView v = parse_chunk(sink.buf.data() + it.off, it.len);
      py::tuple ids(v.count);
      for (uint32_t j = 0; j < v.count; ++j) ids[j] = py::int_(v.token(j));
      out[i] = py::make_tuple(std::move(ids), it.flags, it.aux, py::bytes(v.blob, v.blob_len));
      continue;
    }
    if (it.direct) {
      payload = py::reinterpret_steal<py::object>(it.direct);
      it.direct = nullptr;
      if (it.flags & kFlagOob) payload = oob_object(std::move(payload));
    } else {
      payload = payload_to_object(it.flags, sink.buf.data() + it.off, it.len);
    }
    out[i] = py::make_tuple(it.id, it.flags, it.aux, std::move(payload));
  }
  return out;
}

void define_ring(py::module_& m) {
  py::class_<PyRing, std::shared_ptr<PyRing>>(m, "Ring", "A message ring in shared memory (cpp/ring.hpp).")
      .def_static(
          "create",
          [](size_t capacity, const std::string& name) {
            return std::make_shared<PyRing>(Ring::create(capacity, name));
          },
          py::arg("capacity"), py::arg("name") = "mpserver-ring",
          "A new ring of at least `capacity` data bytes, in a memfd named `name`.")
      .def_static(
          "attach", [](int fd) { return std::make_shared<PyRing>(Ring::attach(fd)); }, py::arg("fd"),
          "Maps the ring behind an inherited fd (the ring takes the fd over).")
      .def_property_readonly("fd", [](PyRing& r) { return r.ring->fd(); })
      .def_property_readonly("capacity", [](PyRing& r) { return r.ring->capacity(); })
      .def_property_readonly("max_chunk", [](PyRing& r) { return r.ring->max_chunk(); })
      .def_property_readonly("closed", [](PyRing& r) { return r.ring->closed(); })
      .def_property_readonly("empty", [](PyRing& r) { return r.ring->empty(); })
      .def_property_readonly("bytes_used", [](PyRing& r) { return r.ring->bytes_used(); })
      .def_property_readonly(
          "depth", [](PyRing& r) { return r.ring->depth(); },
          "Messages in the ring now (a monitoring snapshot).")
      .def_property_readonly(
          "pushed", [](PyRing& r) { return r.ring->pushed(); },
          "Messages pushed into the ring over its life.")
      .def_property_readonly(
          "finished", [](PyRing& r) { return r.ring->finished(); },
          "Closed, and nothing (more) will be consumed.")
      .def_readwrite("object_refs", &PyRing::object_refs,
                     "References each object message pushed here takes (its number of readers).")
      .def(
          "close", [](PyRing& r) { r.ring->close(); }, "No more messages; consumers drain what is there.")
      .def(
          "abort", [](PyRing& r) { r.ring->abort(); },
          "Close and make consumers stop at once, leaving unread messages behind.")
      .def("push", &PyRing::push, py::arg("id"), py::arg("flags"), py::arg("payload"), py::arg("aux") = 0,
           py::arg("timeout") = py::none(), "Pushes one message; returns a Status.")
      .def("push_many", &PyRing::push_many, py::arg("items"), py::arg("aux") = 0,
           "Pushes [(id, flags, payload), ...] in order; returns a Status.")
      .def("push_chunk", &PyRing::push_chunk, py::arg("ids"), py::arg("status"), py::arg("blob"),
           py::arg("aux") = 0,
           "Pushes the results of a chunk as one message (cpp/chunk.hpp): status[i] is 1 where value i "
           "of the pickled list `blob` is item i's encoded error; returns a Status.")
      .def("gather", &PyRing::gather, py::arg("max_items") = 1, py::arg("wait_time") = 0.0,
           py::arg("idle_timeout") = py::none(),
           "The next unit of work: [(id, flags, aux, payload), ...], [] after idle_timeout, "
           "None once closed and drained.");

  py::class_<PyClaimTable, std::shared_ptr<PyClaimTable>>(m, "ClaimTable",
                                                          "Which items each worker holds (cpp/claims.hpp).")
      .def_static(
          "create",
          [](uint32_t workers, uint32_t slots) {
            return std::make_shared<PyClaimTable>(PyClaimTable{ClaimTable::create(workers, slots)});
          },
          py::arg("workers"), py::arg("slots"))
      .def_static(
          "attach",
          [](int fd) { return std::make_shared<PyClaimTable>(PyClaimTable{ClaimTable::attach(fd)}); },
          py::arg("fd"))
      .def_property_readonly("fd", [](PyClaimTable& t) { return t.table->fd(); })
      .def(
          "oldest_since", [](PyClaimTable& t, uint32_t worker) { return t.table->oldest_since(worker); },
          py::arg("worker"),
          "When `worker` took the oldest item it holds (time.monotonic_ns() clock), 0 if it holds none.");
  py::class_<PyCancelBoard, std::shared_ptr<PyCancelBoard>>(
      m, "CancelBoard", "Requests whose callers gave up, for workers to skip (cpp/cancel_board.hpp).")
      .def_static(
          "create",
          [](uint32_t slots) {
            return std::make_shared<PyCancelBoard>(PyCancelBoard{CancelBoard::create(slots)});
          },
          py::arg("slots"))
      .def_static(
          "attach",
          [](int fd) { return std::make_shared<PyCancelBoard>(PyCancelBoard{CancelBoard::attach(fd)}); },
          py::arg("fd"))
      .def_property_readonly("fd", [](PyCancelBoard& b) { return b.board->fd(); })
      .def_property_readonly(
          "dropped", [](PyCancelBoard& b) { return b.board->dropped(); },
          "Items workers skipped because their callers had given up.");
  m.def(
      "bind_board",
      [](std::shared_ptr<PyCancelBoard> b) {
        t_board = b ? b->board.get() : nullptr;  // the caller keeps b alive while bound
      },
      py::arg("board").none(true),
      "Makes this thread's gather() skip items whose callers gave up (their input carries request tokens).");
  m.def(
      "bind_claims",
      [](std::shared_ptr<PyClaimTable> t, uint32_t worker) {
        if (t && worker >= t->table->workers()) throw std::out_of_range("no such worker");
        t_claims = t ? t->table.get() : nullptr;  // the caller keeps t alive while bound
        t_claim_worker = worker;
      },
      py::arg("table").none(true), py::arg("worker") = 0,
      "Makes this thread's gather() claim and push() release items in `table` for `worker`.");
  m.def(
      "share_claims",
      [] {
        g_claims = t_claims;
        g_claim_worker = t_claim_worker;
        g_claims_shared.store(true, std::memory_order_relaxed);  // before the watcher thread starts
      },
      "From the worker's serving thread: another thread of the process (the chunk watcher) may release "
      "its claims from now on (release_handed_back).");
  m.def(
      "release_handed_back",
      [](py::sequence ids) {
        std::vector<uint64_t> v;
        for (py::handle id : ids) v.push_back(id.cast<uint64_t>());
        py::gil_scoped_release nogil;
        std::lock_guard<std::mutex> g(g_claims_mu);
        if (!g_claims) return;
        for (uint64_t id : v) (void)g_claims->release(g_claim_worker, id);
      },
      py::arg("ids"),
      "Releases the serving thread's claims of `ids` (items handed back to the input ring; see "
      "share_claims).");
  m.def(
      "note_answered",
      [](py::sequence ids, py::bytes status) {
        const std::string_view st = status;
        if (st.size() != size_t(py::len(ids))) throw py::value_error("one status per id");
        const int64_t now = worker_clock();
        size_t i = 0;
        for (py::handle id : ids) answered(id.cast<uint64_t>(), st[i++] ? kFlagError : 0, now);
      },
      py::arg("ids"), py::arg("status"),
      "Ends this thread's claims of `ids`, answered by another thread of the worker, and counts their "
      "answers.");
  m.def(
      "set_spin",
      [](int worker, int collector, int worker_yields, int collector_yields) {
        g_spin = SpinSettings{worker, worker_yields, collector, collector_yields};
      },
      py::arg("worker"), py::arg("collector"), py::arg("worker_yields") = 0,
      py::arg("collector_yields") = 100,
      "Before sleeping: busy-wait rounds, then sched_yield rounds, in workers' gather and in the collector.");
}

}  // namespace mpb
