// requests.cpp — Server.call, Server.stream and the asyncio paths, as
// compositions of the request book's steps (cpp/requests.hpp) and the
// stream window's (cpp/stream_window.hpp) with the GIL rules of gil.hpp.
// Decisions (admission, what a failed send means, when a result is dropped,
// when a stream's submit should wait) are the engine's; this file marshals
// payloads and decides only where the GIL is released.
#include <memory>
#include <vector>

#include "../cpp/chunk.hpp"
#include "../cpp/requests.hpp"
#include "../cpp/stream_window.hpp"
#include "../cpp/wire.hpp"
#include "bytes_pool.hpp"
#include "gil.hpp"
#include "meter.hpp"
#include "owned.hpp"
#include "payload.hpp"
#include "ring.hpp"

namespace mpb {

using namespace mps;

namespace {

class PyRequestBook {
 public:
  PyRequestBook(std::shared_ptr<PyRing> output, uint32_t capacity, std::shared_ptr<PyCancelBoard> board,
                std::shared_ptr<PyMeterBoard> meter)
      : output_(std::move(output)),
        board_(std::move(board)),
        meter_(std::move(meter)),
        book_(make_process_local<RequestBook>(
            *output_->ring, capacity, &pool_,
            [](uint32_t flags, const std::string& payload) { dispose_message(flags, payload, 1); })) {
    if (board_) book_->ledger().set_board(board_->board.get());
    if (meter_) book_->ledger().set_meter(&meter_->board->record(0));  // record 0: the server's
  }

  ~PyRequestBook() {
    if (!owned_here(book_)) return;  // a forked child's copy: leaked, the parent's rings untouched
    py::gil_scoped_release nogil;    // the collector may need the GIL to finish its batch
    book_.reset();
  }

  void start() { book().start(g_spin.collector_spin, g_spin.collector_yields); }
  void stop() {
    py::gil_scoped_release nogil;
    book().stop();
  }
  void set_failure(uint32_t flags, py::bytes payload) { book().set_failure(flags, std::string(payload)); }

  // Admits and sends one request; returns (Status, slot).  Waits for a slot
  // (if `wait`) and for ring space until the deadline.
  std::pair<Status, uint32_t> submit(PyRing& entry, py::handle payload, uint32_t flags, bool wait,
                                     int64_t deadline, bool notify_async) {
    uint32_t idx = 0;
    const Ledger::Notify notify = notify_async ? Ledger::Notify::async : Ledger::Notify::none;
    Status st = book().admit(false, 0, &idx, notify);
    if (st == Status::backlog_full && wait) {
      wait_interruptibly(deadline, [&](int64_t until) {
        st = book().admit(true, until, &idx, notify);
        return st != Status::backlog_timeout;
      });
    }
    if (st == Status::backlog_full || st == Status::backlog_timeout) book().ledger().note_rejected();
    if (st != Status::ok) return {st, 0};
    PayloadRef ref;
    try {
      prepare_payload(payload, flags, ref);
    } catch (...) {
      book().withdraw(idx);
      throw;
    }
    OutMessage m{0, flags, 0, ref.parts, ref.nparts};
    add_refs(flags, ref.handle, entry.object_refs);
    st = book().send(*entry.ring, idx, m, deadline, false);  // with the GIL: no thread switch
    if (st == Status::push_timeout) {
      py::gil_scoped_release nogil;
      st = book().send(*entry.ring, idx, m, deadline, true);
    }
    if (st != Status::ok) drop_refs(flags, ref.handle, entry.object_refs);
    return {st, idx};
  }

  // (flags, payload) of a done slot, which is freed.
  py::tuple take(uint32_t idx) {
    uint32_t flags = 0;
    py::object obj = book().take(idx, [&](Ledger::Result& r) {
      flags = r.flags;
      return take_payload(r.flags, r.payload);
    });
    note_taken(flags, obj);
    return py::make_tuple(flags, std::move(obj));
  }

  // Takes a done slot that holds a part of a chunk of results (flags has
  // kFlagChunk): its header, and its blob if it holds the chunk's.  No
  // Python object is made.  Returns false (taking nothing) for any other result.
  bool take_part(uint32_t idx, uint32_t* flags, ChunkPartHeader* h, std::string* blob) {
    bool part = false;
    book().ledger().peek(idx, [&](const Ledger::Result& r) { part = (r.flags & kFlagChunk) != 0; });
    if (!part) return false;
    book().take(idx, [&](Ledger::Result& r) {
      *flags = r.flags;
      if (r.payload.size() < sizeof *h) throw std::runtime_error("corrupt chunk part");
      std::memcpy(h, r.payload.data(), sizeof *h);
      if (h->has_blob) blob->assign(r.payload, sizeof *h, std::string::npos);
      return 0;
    });
    return true;
  }

  // With the GIL, for every result handed to Python: a large raw result asks
  // the pool for a home for the next one.
  void note_taken(uint32_t flags, const py::object& obj) {
    if (!(flags & kFlagRaw) || !PyBytes_Check(obj.ptr())) return;
    const size_t size = size_t(PyBytes_GET_SIZE(obj.ptr()));
    if (size >= kLargePayloadBytes) pool_.taken(size, !(flags & kFlagObject));
  }

  // submit + wait + take in one crossing: returns (status, flags, payload).
  // On result_timeout the payload is the seconds spent enqueueing.
  py::tuple call(PyRing& entry, py::handle payload, uint32_t flags, double timeout, bool backpressure) {
    const int64_t t0 = now_ns();
    const int64_t deadline = deadline_after(timeout);
    auto [st, idx] = submit(entry, payload, flags, !backpressure, deadline, false);
    if (st != Status::ok) return py::make_tuple(int(st), 0, py::none());
    const int64_t t_enqueued = now_ns();
    const bool done = wait_interruptibly(
        deadline, [&, idx = idx](int64_t until) { return book().wait(idx, until); },
        [&, idx = idx] { book().abandon(idx, Ledger::GiveUp::cancelled); });
    if (!done) {
      book().abandon(idx, Ledger::GiveUp::timed_out);
      return py::make_tuple(int(Status::result_timeout), 0, double(t_enqueued - t0) / 1e9);
    }
    py::tuple t = take(idx);
    return py::make_tuple(int(Status::ok), t[0], t[1]);
  }

  // asyncio: admits without waiting and sends; returns (status, token).
  py::tuple submit_async(PyRing& entry, py::handle payload, uint32_t flags) {
    auto [st, idx] = submit(entry, payload, flags, false, kForever, true);
    return py::make_tuple(int(st), st == Status::ok ? book().token(idx) : 0);
  }
  std::vector<uint64_t> drain_async() {
    std::vector<uint64_t> out;
    book().drain_async(out);
    return out;
  }
  py::tuple take_token(uint64_t token) { return take(book().slot_of(token)); }
  void abandon_token(uint64_t token, bool timed_out) {
    book().abandon(book().slot_of(token), timed_out ? Ledger::GiveUp::timed_out : Ledger::GiveUp::cancelled);
  }

  void fail_pending(uint32_t flags, py::bytes payload) { book().fail_pending(flags, std::string(payload)); }

  py::list snapshot() {
    static const char* names[] = {"free", "pending", "done", "abandoned"};
    py::list out;
    for (const auto& e : book().snapshot())
      out.append(py::make_tuple(e.idx, names[e.state & 3], double(e.age_ns) / 1e9));
    return out;
  }

  // Every use goes through here: a forked child gets a clear error (owned.hpp).
  RequestBook& book() { return owned(book_, "request book"); }
  BytesPool& pool() { return pool_; }

 private:
  std::shared_ptr<PyRing> output_;
  std::shared_ptr<PyCancelBoard> board_;  // before the book: the ledger posts to it
  std::shared_ptr<PyMeterBoard> meter_;   // before the book: the ledger counts into it
  BytesPool pool_;                        // before the book: it outlives the collector's thread
  ProcessLocal<RequestBook> book_;
};

// drain()'s outcome for a run of chunk values that are plain results:
// (kOutcomeValues, 0, [value, ...]), one entry for the whole run.
constexpr int kOutcomeValues = 100;

class PyStreamWindow {
 public:
  PyStreamWindow(PyRequestBook& engine, std::shared_ptr<PyRing> entry, double item_timeout)
      : engine_(engine),
        entry_(std::move(entry)),
        win_(make_process_local<StreamWindow>(engine.book().ledger(), *entry_->ring,
                                              item_timeout > 1e9 ? kForever : int64_t(item_timeout * 1e9))) {}

  // Sends [(flags, payload), ...]; returns (accepted, status), status being
  // ok or the reason the rest was not accepted.
  py::tuple submit(py::list encoded, bool wait, double timeout) {
    const size_t n = encoded.size();
    std::vector<PayloadRef> refs(n);
    std::vector<OutMessage> msgs(n);
    for (size_t i = 0; i < n; ++i) {
      PyObject* item = PyList_GET_ITEM(encoded.ptr(), Py_ssize_t(i));
      if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2)
        throw py::type_error("expected (flags, payload)");
      const uint32_t flags = py::reinterpret_borrow<py::object>(PyTuple_GET_ITEM(item, 0)).cast<uint32_t>();
      prepare_payload(PyTuple_GET_ITEM(item, 1), flags, refs[i]);
      msgs[i] = OutMessage{0, flags, 0, refs[i].parts, refs[i].nparts};
      add_refs(flags, refs[i].handle, entry_->object_refs);
    }
    // First without waiting, keeping the GIL (a feeder thread that gave it up
    // on every item would hand it to the draining thread and back); wait
    // without it only where the window says a blocking submit would have.
    Status st;
    const int64_t deadline = deadline_after(timeout);
    size_t k = win().submit(msgs.data(), n, wait, deadline, &st, false);
    if (StreamWindow::worth_blocking(k, n, st, wait)) {
      py::gil_scoped_release nogil;
      k += win().submit(msgs.data() + k, n - k, wait, deadline, &st);
    }
    for (size_t i = k; i < n; ++i) drop_refs(msgs[i].flags, refs[i].handle, entry_->object_refs);
    return py::make_tuple(k, int(st));
  }

  // Sends `count` inputs as one chunk whose values `blob` (bytes: the pickle
  // of their list) holds; returns (accepted: count or 0, status).  Never
  // waits for a slot: with fewer than `count` free, the caller sends singly.
  py::tuple submit_chunk(uint32_t count, py::bytes blob, double timeout) {
    const std::string_view b = blob;
    const Slice part{b.data(), b.size()};
    Status st;
    const int64_t deadline = deadline_after(timeout);
    size_t k = win().submit_chunk(count, &part, 1, deadline, &st, false);
    if (k == 0 && st == Status::push_timeout) {  // the ring is full: wait for space without the GIL
      py::gil_scoped_release nogil;
      k = win().submit_chunk(count, &part, 1, deadline, &st, true);
    }
    return py::make_tuple(k, int(st));
  }

  void add_local() { win().add_local(); }

  // [(outcome, flags, payload), ...] for the ready prefix of the window
  // (waiting for its head), or [] once the window is finished and empty.
  // With wait false: only what is ready now, [] if the head is not ready.
  py::list drain(size_t max, bool wait) {
    out_.clear();
    if (!wait) {
      win().drain(max, 0, now_ns(), out_);  // a passed deadline: never sleeps
      if (!out_.empty() && out_[0].outcome == Outcome::pending) out_.clear();
    } else {
      wait_interruptibly(kForever, [&](int64_t until) {
        out_.clear();
        win().drain(max, 0, until, out_);
        return out_.empty() || out_[0].outcome != Outcome::pending;
      });
    }
    py::list res;
    py::list values;  // a run of chunk values that are plain results
    auto end_run = [&] {
      if (values.empty()) return;
      res.append(py::make_tuple(kOutcomeValues, 0, values));
      values = py::list();
    };
    for (const auto& d : out_) {
      if (d.outcome == Outcome::end) break;
      if (d.outcome == Outcome::ready) {
        uint32_t flags;
        ChunkPartHeader h;
        if (engine_.take_part(d.slot, &flags, &h, &blob_)) {
          part_failed_ = false;
          py::object v = chunk_value(h);
          if (!(flags & kFlagError) && chunk_failure_.is_none() && !part_failed_) {
            values.append(std::move(v));
            continue;
          }
          // An item's error, or a chunk (or an item of it) that did not unpickle.
          end_run();
          res.append(py::make_tuple(int(d.outcome), flags | kFlagError, std::move(v)));
          continue;
        }
        end_run();
        py::tuple t = engine_.take(d.slot);
        res.append(py::make_tuple(int(d.outcome), t[0], t[1]));
      } else {
        end_run();
        res.append(py::make_tuple(int(d.outcome), 0, py::none()));
      }
    }
    end_run();
    return res;
  }

  void finish() { win().finish(); }
  void close() {
    if (!owned_here(win_)) return;  // a forked child closing a stream it inherited: nothing of its own
    py::gil_scoped_release nogil;
    win().close();
  }
  size_t size() { return win().size(); }

 private:
  StreamWindow& win() { return owned(win_, "stream"); }

  // One item's value from its part of a chunk of results (cpp/chunk.hpp):
  // the part that holds the blob is unpickled once, and the list is kept
  // for the chunk's later items, which follow it in the window.  A blob
  // that does not unpickle gives every item of the chunk that exception.
  py::object chunk_value(const ChunkPartHeader& h) {
    if (h.has_blob) {
      chunk_key_ = h.key;
      chunk_values_ = py::none();
      chunk_failure_ = py::none();
      try {
        static const py::handle loads = py::object(py::module_::import("pickle").attr("loads")).release();
        // (0, [value, ...]) or (1, [pickle of value, ...]): see python/mpserver/_chunking.py.
        // The list and its form are kept, so each later item is one list index.
        py::object run = loads(py::memoryview::from_memory(blob_.data(), py::ssize_t(blob_.size())));
        py::tuple t = py::cast<py::tuple>(run);
        if (t.size() != 2 || !PyList_Check(t[1].ptr())) throw py::cast_error("corrupt chunk of results");
        chunk_pickled_ = t[0].cast<int>() != 0;
        chunk_values_ = t[1];
      } catch (py::error_already_set& e) {
        chunk_failure_ = e.value();
      } catch (const py::cast_error& e) {
        chunk_failure_ =
            py::reinterpret_steal<py::object>(PyObject_CallFunction(PyExc_ValueError, "s", e.what()));
      }
    } else if (chunk_key_ != h.key || (chunk_values_.is_none() && chunk_failure_.is_none())) {
      throw std::runtime_error("a chunk's result arrived without its chunk");
    }
    if (!chunk_failure_.is_none()) return chunk_failure_;
    PyObject* values = chunk_values_.ptr();
    if (h.index >= size_t(PyList_GET_SIZE(values))) throw std::runtime_error("corrupt chunk part");
    py::object v = py::reinterpret_borrow<py::object>(PyList_GET_ITEM(values, Py_ssize_t(h.index)));
    if (!chunk_pickled_) return v;
    static const py::handle loads =
        py::object(py::module_::import("pickle").attr("loads")).release();  // kept for the process's life
    try {
      return loads(v);
    } catch (py::error_already_set& e) {
      part_failed_ = true;
      return e.value();
    }
  }

  PyRequestBook& engine_;
  std::shared_ptr<PyRing> entry_;
  ProcessLocal<StreamWindow> win_;
  std::vector<StreamWindow::Drained> out_;
  std::string blob_;                      // the blob of the part being taken
  uint64_t chunk_key_ = 0;                // the chunk whose values are kept (its first token)
  py::object chunk_values_ = py::none();  // the kept chunk's list of values (or pickles)
  bool chunk_pickled_ = false;            // its entries are pickles, one per value
  py::object chunk_failure_ = py::none();
  bool part_failed_ = false;  // its value did not unpickle
};

}  // namespace

RequestBook& request_book_of(py::handle book) { return py::cast<PyRequestBook&>(book).book(); }

void define_requests(py::module_& m) {
  py::class_<PyRequestBook>(m, "RequestBook", "The request book of one Server (cpp/requests.hpp).")
      .def(py::init<std::shared_ptr<PyRing>, uint32_t, std::shared_ptr<PyCancelBoard>,
                    std::shared_ptr<PyMeterBoard>>(),
           py::arg("output"), py::arg("capacity"), py::arg("board") = nullptr, py::arg("meter") = nullptr)
      .def("start", &PyRequestBook::start, "Starts the collector.")
      .def("stop", &PyRequestBook::stop, "Closes the output ring and waits for the collector to drain it.")
      .def("call", &PyRequestBook::call, py::arg("ring"), py::arg("payload"), py::arg("flags"),
           py::arg("timeout"), py::arg("backpressure"), "One request, waited for: (status, flags, payload).")
      .def_property_readonly("backlog", [](PyRequestBook& e) { return e.book().backlog(); })
      .def_property_readonly("capacity", [](PyRequestBook& e) { return e.book().capacity(); })
      .def_property_readonly("collector_running",
                             [](PyRequestBook& e) { return e.book().collector_running(); })
      .def_property_readonly("delivered", [](PyRequestBook& e) { return e.book().delivered(); })
      .def(
          "close", [](PyRequestBook& e) { e.book().close(); }, "Admits no more requests.")
      .def("fail_pending", &PyRequestBook::fail_pending, py::arg("flags"), py::arg("payload"),
           "Completes every request in flight with this result (teardown).")
      .def("set_failure", &PyRequestBook::set_failure, py::arg("flags"), py::arg("payload"),
           "The result every request in flight gets if the output ring turns out corrupt.")
      .def("submit_async", &PyRequestBook::submit_async, py::arg("ring"), py::arg("payload"),
           py::arg("flags"), "Admits (without waiting) and sends an async request: (status, token).")
      .def("drain_async", &PyRequestBook::drain_async,
           "Tokens of async requests finished since the last call.")
      .def("take_token", &PyRequestBook::take_token, py::arg("token"),
           "(flags, payload) of a finished async request.")
      .def("abandon_token", &PyRequestBook::abandon_token, py::arg("token"), py::arg("timed_out") = false,
           "The async caller gave up on this request (its timeout passed, or it was cancelled).")
      .def_property_readonly(
          "async_fd", [](PyRequestBook& e) { return e.book().async_fd(); },
          "An eventfd readable when async requests finished.")
      .def("snapshot", &PyRequestBook::snapshot, "[(slot, state, age in seconds)] of the slots in use.");

  m.attr("OUTCOME_VALUES") = kOutcomeValues;
  py::class_<PyStreamWindow>(m, "StreamWindow", "The ordered window of one stream (cpp/stream_window.hpp).")
      .def(py::init<PyRequestBook&, std::shared_ptr<PyRing>, double>(), py::arg("engine"), py::arg("ring"),
           py::arg("item_timeout"), py::keep_alive<1, 2>())
      .def("submit", &PyStreamWindow::submit, py::arg("encoded"), py::arg("wait"), py::arg("timeout"),
           "Sends [(flags, payload), ...]: (accepted, status).")
      .def("submit_chunk", &PyStreamWindow::submit_chunk, py::arg("count"), py::arg("blob"),
           py::arg("timeout"), "Sends `count` inputs as one chunk (cpp/chunk.hpp): (count or 0, status).")
      .def("add_local", &PyStreamWindow::add_local, "An input that failed before it was sent.")
      .def("drain", &PyStreamWindow::drain, py::arg("max") = 256, py::arg("wait") = true,
           "[(outcome, flags, payload)] of the ready prefix, a run of plain chunk values as one "
           "(OUTCOME_VALUES, 0, [value, ...]); [] at the end.")
      .def("finish", &PyStreamWindow::finish, "The feeder adds nothing more.")
      .def("close", &PyStreamWindow::close, "Abandons everything still outstanding.")
      .def("__len__", &PyStreamWindow::size);
}

}  // namespace mpb
