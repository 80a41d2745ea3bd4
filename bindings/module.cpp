// module.cpp — mpserver._core: the wire vocabulary (cpp/wire.hpp) as Python
// enums and constants, and the module's pieces (module.hpp).  Definitions
// only: what each piece does lives in its own file.
#include <pybind11/native_enum.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "../cpp/composite.hpp"
#include "../cpp/ring.hpp"
#include "../cpp/wire.hpp"
#include "module.hpp"

#ifndef MPSERVER_VERSION
#error "MPSERVER_VERSION must be defined by the build (from pyproject.toml)"
#endif

namespace py = pybind11;
using namespace mps;

namespace {

enum class Flag : uint32_t {
  OBJECT = kFlagObject,
  ERROR = kFlagError,
  CONTROL = kFlagControl,
  ENSEMBLE = kFlagEnsemble,
  CRASH = kFlagCrash,
  RAW = kFlagRaw,
  OOB = kFlagOob,
  HTTP = kFlagHttp,
  REQUEST = kFlagRequest,
  CHUNK = kFlagChunk,
};

void define_wire(py::module_& m) {
  py::native_enum<Flag>(m, "Flag", "enum.IntFlag", "Message flags (cpp/wire.hpp).")
      .value("OBJECT", Flag::OBJECT, "payload is a reference to an object of the main process")
      .value("ERROR", Flag::ERROR, "payload is an exception")
      .value("CONTROL", Flag::CONTROL, "a control-plane message")
      .value("ENSEMBLE", Flag::ENSEMBLE, "payload is an ensemble composite")
      .value("CRASH", Flag::CRASH, "with ERROR: a crash report written by the guardian")
      .value("RAW", Flag::RAW, "payload is the raw contents of a bytes value")
      .value("OOB", Flag::OOB, "payload is a pickle with out-of-band buffers")
      .value("HTTP", Flag::HTTP, "payload is an HTTP response for the native front (HttpHead + body)")
      .value("REQUEST", Flag::REQUEST, "payload is an HTTP request record from the native front")
      .value("CHUNK", Flag::CHUNK,
             "payload is a chunk of several items, or one item's part of one (cpp/chunk.hpp)")
      .finalize();
  py::native_enum<Status>(m, "Status", "enum.IntEnum", "What a request came to (cpp/wire.hpp).")
      .value("OK", Status::ok)
      .value("BACKLOG_FULL", Status::backlog_full)
      .value("BACKLOG_TIMEOUT", Status::backlog_timeout)
      .value("RESULT_TIMEOUT", Status::result_timeout)
      .value("CLOSED", Status::closed)
      .value("PUSH_TIMEOUT", Status::push_timeout)
      .finalize();
  py::native_enum<Outcome>(m, "Outcome", "enum.IntEnum", "What a stream's drain found at its head.")
      .value("READY", Outcome::ready)
      .value("LOCAL", Outcome::local)
      .value("TIMED_OUT", Outcome::timed_out)
      .value("END", Outcome::end)
      .value("PENDING", Outcome::pending)
      .finalize();
  py::native_enum<Control>(m, "Control", "enum.IntEnum", "A worker's report on the control ring (aux field).")
      .value("READY", Control::ready)
      .value("INIT_FAILED", Control::init_failed)
      .value("LOG", Control::log)
      .value("EVENT", Control::event)
      .value("ACCESS", Control::access)
      .finalize();
  py::native_enum<ChildFd>(m, "ChildFd", "enum.IntEnum", "The fds a worker process is handed.")
      .value("BOOT", kFdBoot)
      .value("CONTROL", kFdControl)
      .value("INPUT", kFdInput)
      .value("OUTPUT", kFdOutput)
      .value("CLAIMS", kFdClaims)
      .value("BOARD", kFdBoard)
      .value("METER", kFdMeter)
      .finalize();
  m.attr("LARGE_PAYLOAD_BYTES") = kLargePayloadBytes;
  m.attr("INPUT_RING_BYTES") = kInputRingBytes;
  m.attr("OUTPUT_RING_BYTES") = kOutputRingBytes;
  m.attr("CONTROL_RING_BYTES") = kControlRingBytes;
  m.attr("CLAIM_SLOTS") = kClaimSlots;
  m.attr("MAX_ENSEMBLE_MEMBERS") = kMaxEnsembleMembers;
  m.attr("PART_MISSING") = kPartMissing;
  m.attr("COMPOSITE_MAGIC") = kCompositeMagic;
  m.attr("TOKEN_HTTP") = kTokenHttp;
  m.attr("HTTP_HEAD_BYTES") = sizeof(HttpHead);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() =
      "mpserver's C++ core: shared-memory rings, request book, collector, routers, supervisor, guardian.";
  m.attr("__version__") = MPSERVER_VERSION;
  define_wire(m);
  py::register_exception<RingCorrupt>(m, "RingCorrupt");
  mpb::define_gil(m);
  mpb::define_payload(m);
  mpb::define_ring(m);
  mpb::define_meter(m);
  mpb::define_exposition(m);
  mpb::define_requests(m);
  mpb::define_routers(m);
  mpb::define_process(m);
  mpb::define_http(m);
  mpb::define_testing(m);
}
