// process.cpp — worker processes and healing: spawn specs, the supervisor,
// the guardian (with the relay it needs for thread servlets), and the small
// process tweaks a worker makes at start-up.
#include <malloc.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "../cpp/guardian.hpp"
#include "../cpp/shm.hpp"
#include "../cpp/supervisor.hpp"
#include "../cpp/wire.hpp"
#include "gil.hpp"
#include "meter.hpp"
#include "owned.hpp"
#include "payload.hpp"
#include "ring.hpp"

namespace mpb {

using namespace mps;

namespace {

struct PySupervisor {
  ProcessLocal<Supervisor> owner = make_process_local<Supervisor>();
  Supervisor& sup() { return owned(owner, "supervisor"); }
};

// For a thread servlet's input, whose messages may hold object references:
// `pass_error(flags, payload) -> (flags, payload)` (Python's codec) makes an
// upstream error fit for the servlet's output.
class PyRelay : public MessageRelay {
 public:
  explicit PyRelay(py::function pass_error) : pass_error_(std::move(pass_error)) {}
  ~PyRelay() override {
    py::gil_scoped_acquire gil;
    pass_error_ = py::function();
  }

  void pass_on(OwnedMessage& m) override {
    if (!(m.flags & (kFlagObject | kFlagEnsemble))) return;  // bytes go on unchanged
    py::gil_scoped_acquire gil;
    py::object obj = payload_to_object(m.flags, m.payload.data(), m.payload.size());  // adopts the references
    py::tuple out = pass_error_(m.flags, obj);
    const uint32_t flags = out[0].cast<uint32_t>();
    py::object payload = out[1];
    PayloadRef ref;
    prepare_payload(payload, flags, ref);
    add_refs(flags, ref.handle, 1);  // the message now owns one reference
    std::string bytes;
    for (size_t i = 0; i < ref.nparts; ++i) bytes.append(ref.parts[i].data, ref.parts[i].len);
    m.flags = flags;
    m.payload = std::move(bytes);
  }

  void drop(const OwnedMessage& m) override { dispose_message(m.flags, m.payload, 1); }

 private:
  py::function pass_error_;
};

class PyGuardian {
 public:
  explicit PyGuardian(PySupervisor& sup) : g_(make_process_local<Guardian>(sup.sup())) {}
  ~PyGuardian() {
    if (!owned_here(g_)) return;   // a forked child's copy: leaked (process_local.hpp)
    py::gil_scoped_release nogil;  // failers may need the GIL (PyRelay) while they are joined
    g_.reset();
  }

  uint32_t add_processes(const std::string& label, std::vector<std::string> names, uint32_t max_restarts,
                         double window, std::shared_ptr<PyRing> input, std::shared_ptr<PyRing> output,
                         std::shared_ptr<PyRing> control, std::shared_ptr<PyClaimTable> claims,
                         std::vector<SpawnSpec> specs, std::vector<int> pids, double item_timeout,
                         std::shared_ptr<PyMeterBoard> meter, std::vector<uint32_t> records) {
    GuardedServlet s =
        base(label, std::move(names), max_restarts, window, input, output, claims, meter, records);
    s.kind = WorkerKind::process;
    s.item_timeout_ns = item_timeout > 0 ? int64_t(item_timeout * 1e9) : 0;
    s.control = control->ring.get();
    s.specs = std::move(specs);
    s.pids.assign(pids.begin(), pids.end());
    keep_rings_.push_back(control);
    return guardian().add(std::move(s));
  }

  uint32_t add_threads(const std::string& label, std::vector<std::string> names, uint32_t max_restarts,
                       double window, std::shared_ptr<PyRing> input, std::shared_ptr<PyRing> output,
                       std::shared_ptr<PyClaimTable> claims, py::function pass_error,
                       std::shared_ptr<PyMeterBoard> meter, std::vector<uint32_t> records) {
    GuardedServlet s =
        base(label, std::move(names), max_restarts, window, input, output, claims, meter, records);
    s.kind = WorkerKind::thread;
    relays_.push_back(std::make_unique<PyRelay>(std::move(pass_error)));
    s.relay = relays_.back().get();
    return guardian().add(std::move(s));
  }

  bool thread_stopped(uint32_t servlet, uint32_t index, const std::string& cause) {
    py::gil_scoped_release nogil;
    return guardian().thread_stopped(servlet, index, cause);
  }
  void thread_lost(uint32_t servlet, uint32_t index) {
    py::gil_scoped_release nogil;
    guardian().thread_lost(servlet, index);
  }
  void start() { guardian().start(); }
  void set_events(std::shared_ptr<PyRing> control) {
    keep_rings_.push_back(control);
    guardian().set_events(control->ring.get());
  }
  void stop(py::object grace) {
    const double g = grace.is_none() ? 0.0 : grace.cast<double>();
    guardian().stop(g > 0 ? int64_t(g * 1e9) : 0);
  }
  std::string thread_stuck(uint32_t servlet, uint32_t index) {
    return guardian().thread_stuck(servlet, index);
  }
  bool wait_idle(py::object timeout) {
    const int64_t deadline = deadline_from(timeout);
    py::gil_scoped_release nogil;
    return guardian().wait_idle(deadline);
  }
  py::dict info(uint32_t i) const {
    Guardian::Info inf = guardian().info(i);
    py::dict d;
    d["restarts"] = inf.restarts;
    d["crashes"] = inf.crashes;
    d["pids"] = std::vector<int>(inf.pids.begin(), inf.pids.end());
    d["failed"] = inf.failed;
    d["overdue_kills"] = inf.overdue_kills;
    return d;
  }
  bool serving() const { return guardian().serving(); }

  // Every use goes through here: a forked child gets a clear error (owned.hpp).
  Guardian& guardian() const { return owned(g_, "guardian"); }

 private:
  GuardedServlet base(const std::string& label, std::vector<std::string> names, uint32_t max_restarts,
                      double window, const std::shared_ptr<PyRing>& input,
                      const std::shared_ptr<PyRing>& output, const std::shared_ptr<PyClaimTable>& claims,
                      const std::shared_ptr<PyMeterBoard>& meter, std::vector<uint32_t>& records) {
    GuardedServlet s;
    if (meter) {
      if (records.size() != names.size()) throw std::invalid_argument("one meter record per worker");
      for (uint32_t r : records) (void)meter->board->record(r);  // throws if out of range
      s.meter = meter->board.get();
      s.records = std::move(records);
      keep_meters_.push_back(meter);
    }
    s.label = label;
    s.names = std::move(names);
    s.max_restarts = max_restarts;
    s.window_ns = int64_t(window * 1e9);
    s.input = input->ring.get();
    s.output = output->ring.get();
    s.claims = claims->table.get();
    keep_rings_.insert(keep_rings_.end(), {input, output});
    keep_claims_.push_back(claims);
    return s;
  }

  // Declared first so they are destroyed after the guardian (which uses them).
  std::vector<std::shared_ptr<PyRing>> keep_rings_;
  std::vector<std::shared_ptr<PyClaimTable>> keep_claims_;
  std::vector<std::shared_ptr<PyMeterBoard>> keep_meters_;
  std::vector<std::unique_ptr<PyRelay>> relays_;
  ProcessLocal<Guardian> g_;
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

}  // namespace

Guardian& guardian_of(py::handle guardian) { return py::cast<PyGuardian&>(guardian).guardian(); }

void define_process(py::module_& m) {
  py::class_<SpawnSpec>(m, "SpawnSpec", "How to start one worker process (cpp/supervisor.hpp).")
      .def(py::init([](std::vector<std::string> argv, std::vector<std::pair<int, int>> fds,
                       std::vector<int> cpus, std::vector<std::string> env) {
             return SpawnSpec{std::move(argv), std::move(fds), std::move(cpus), std::move(env)};
           }),
           py::arg("argv"), py::arg("fds"), py::arg("cpus") = std::vector<int>{},
           py::arg("env") = std::vector<std::string>{})
      .def_readonly("argv", &SpawnSpec::argv, "argv[0] is the executable's path.")
      .def_readonly("fds", &SpawnSpec::fds, "(fd here, fd number in the child) pairs.")
      .def_readonly("cpus", &SpawnSpec::cpus, "CPU affinity; empty: no pinning.")
      .def_readonly("env", &SpawnSpec::env, "KEY=VALUE strings; empty: this process's environment.")
      .def("__repr__", [](const SpawnSpec& s) {
        std::string r = "SpawnSpec(argv=[";
        for (size_t i = 0; i < s.argv.size(); ++i) r += (i ? ", '" : "'") + s.argv[i] + "'";
        return r + "], ...)";
      });

  py::class_<PySupervisor>(m, "Supervisor", "Spawns worker processes and reaps them (cpp/supervisor.hpp).")
      .def(py::init<>())
      .def(
          "spawn",
          [](PySupervisor& s, const std::vector<SpawnSpec>& specs) {
            std::vector<pid_t> pids;
            {
              py::gil_scoped_release nogil;
              pids = s.sup().spawn(specs);
            }
            return std::vector<int>(pids.begin(), pids.end());
          },
          py::arg("specs"), "Spawns every spec; returns their pids in order.")
      .def(
          "wait_exit",
          [](PySupervisor& s, int pid, py::object timeout) -> py::object {
            int st = 0;
            bool ok;
            int64_t d = deadline_from(timeout);
            {
              py::gil_scoped_release nogil;
              ok = s.sup().wait_exit(pid, d, &st);
            }
            if (!ok) return py::none();
            return py::int_(st);
          },
          py::arg("pid"), py::arg("timeout") = py::none(),
          "The raw wait status once pid exited, None on timeout.")
      .def(
          "exit_status",
          [](PySupervisor& s, int pid) -> py::object {
            int st = 0;
            if (!s.sup().has_exited(pid, &st)) return py::none();
            return py::int_(st);
          },
          py::arg("pid"), "The raw wait status if pid has exited, else None.")
      .def(
          "kill", [](PySupervisor& s, int pid, int sig) { s.sup().kill(pid, sig); }, py::arg("pid"),
          py::arg("sig"));

  py::class_<PyGuardian>(m, "Guardian", "Heals a running server when a worker dies (cpp/guardian.hpp).")
      .def(py::init<PySupervisor&>(), py::arg("supervisor"), py::keep_alive<1, 2>())
      .def("add_processes", &PyGuardian::add_processes, py::arg("label"), py::arg("names"),
           py::arg("max_restarts"), py::arg("window"), py::arg("input"), py::arg("output"),
           py::arg("control"), py::arg("claims"), py::arg("specs"), py::arg("pids"),
           py::arg("item_timeout") = 0.0, py::arg("meter") = nullptr,
           py::arg("records") = std::vector<uint32_t>{},
           "Guards a process servlet whose workers run; returns its number.  item_timeout > 0: "
           "seconds after which a worker still holding an item is killed (and its items failed).  "
           "meter, records: where each worker's crashes and restarts are counted.")
      .def("add_threads", &PyGuardian::add_threads, py::arg("label"), py::arg("names"),
           py::arg("max_restarts"), py::arg("window"), py::arg("input"), py::arg("output"), py::arg("claims"),
           py::arg("pass_error"), py::arg("meter") = nullptr, py::arg("records") = std::vector<uint32_t>{},
           "Guards a thread servlet; pass_error(flags, payload) re-encodes upstream errors for its output.")
      .def("set_events", &PyGuardian::set_events, py::arg("control"),
           "Lifecycle events go to this ring as Control.EVENT messages; the caller drains it.  Before "
           "start().")
      .def("thread_stopped", &PyGuardian::thread_stopped, py::arg("servlet"), py::arg("index"),
           py::arg("cause"),
           "A worker thread was stopped by `cause`: fails what it held; True if it may restart.")
      .def("thread_lost", &PyGuardian::thread_lost, py::arg("servlet"), py::arg("index"),
           "A worker thread could not be restarted.")
      .def("start", &PyGuardian::start)
      .def("stop", &PyGuardian::stop, py::arg("grace") = py::none(),
           "The server is stopping: no more restarts or failers; with a grace (seconds), workers "
           "stuck for longer from now on are killed.")
      .def("thread_stuck", &PyGuardian::thread_stuck, py::arg("servlet"), py::arg("index"),
           "Whether a worker thread is stuck by the watchdog's rules: '' if not, else what it did.")
      .def("wait_idle", &PyGuardian::wait_idle, py::arg("timeout") = py::none(),
           "Waits until every worker exit seen so far is handled; False on timeout.")
      .def("serving", &PyGuardian::serving,
           "Whether every servlet has a live worker and none spent its restart budget (the HTTP front's "
           "/readyz).")
      .def("info", &PyGuardian::info, py::arg("servlet"),
           "{restarts, crashes, pids, failed, overdue_kills} of a servlet.");

  m.def("memfd_from_bytes", &memfd_from_bytes, py::arg("name"), py::arg("data"),
        "A memfd holding `data` (a worker's bootstrap).");
  m.def(
      "bind_to_parent",
      [](int expected_ppid) {
        // In a freshly spawned worker: die with the parent.  False if the
        // parent is already gone (getppid() no longer matches).
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        return getppid() == expected_ppid;
      },
      py::arg("expected_ppid"),
      "Makes this process die with its parent; False if the parent is gone already.");
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

}  // namespace mpb
