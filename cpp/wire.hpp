// wire.hpp — the vocabulary every side of mpserver speaks: message flags,
// request statuses, stream outcomes, control codes, the fd numbers a worker
// process is handed, and the sizes that are part of the protocol.
//
// Each is defined here once.  The engine uses them directly; the bindings
// export them to Python (module.cpp: enums Flag, Status, Outcome, Control,
// ChildFd, and integer constants for the sizes); Python code imports them
// from mpserver._core and never re-declares a value.
//
// Invariants
//   * Message flags are distinct bits >= 1 << 8: the low byte of a frame's
//     flags is the ring's framing (ring.hpp, kFramingMask).
//   * Status values are what every request path returns (ledger, stream
//     window, request book), so a status is translated once, in Python, into
//     the exception the caller sees.
// No memory-ordering concerns: these are constants.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mps {

// ---- message flags (the caller-owned bits of a frame's flags) ----

// Payload is a PyObject* owned by the message (main process only).
inline constexpr uint32_t kFlagObject = 1u << 8;
// Payload is an exception (pickled RemoteException, object, or composite).
inline constexpr uint32_t kFlagError = 1u << 9;
// Control-plane message (readiness, start-up failures).
inline constexpr uint32_t kFlagControl = 1u << 10;
// Payload is an ensemble composite (see composite.hpp).
inline constexpr uint32_t kFlagEnsemble = 1u << 11;
// With kFlagError: a worker crash report written by the guardian (see
// guardian.hpp for the payload), not a pickled exception.
inline constexpr uint32_t kFlagCrash = 1u << 12;
// Payload is the raw contents of a Python ``bytes`` value, not a pickle.
inline constexpr uint32_t kFlagRaw = 1u << 13;
// Payload is a pickle with out-of-band buffers (see oob_message.hpp).
inline constexpr uint32_t kFlagOob = 1u << 14;
// Payload is an HTTP response made by a worker for the HTTP front: an
// HttpHead (below), then the body.
inline constexpr uint32_t kFlagHttp = 1u << 15;
// Payload is an HTTP request record made by the front (http_message.hpp),
// for a route whose workers asked for the whole request, not just its body.
inline constexpr uint32_t kFlagRequest = 1u << 16;
// Payload is a chunk: several items' tokens and one pickle of their values
// (chunk.hpp); in a ledger slot, one item's part of a chunk of results.
inline constexpr uint32_t kFlagChunk = 1u << 17;

inline constexpr uint32_t kAllFlags = kFlagObject | kFlagError | kFlagControl | kFlagEnsemble | kFlagCrash |
                                      kFlagRaw | kFlagOob | kFlagHttp | kFlagRequest | kFlagChunk;
static_assert((kAllFlags & 0xffu) == 0, "message flags must leave the framing byte alone");
static_assert(__builtin_popcount(kAllFlags) == 10, "message flags must be distinct bits");

// ---- the HTTP front's requests

// Bit 63 of a request token: the request came through the HTTP front, so the
// worker that makes its final result encodes it as an HTTP response
// (kFlagHttp) instead of a pickle.  Set by the ledger (ledger.hpp); the token
// travels unchanged through the tree, so no stage in between needs to know.
inline constexpr uint64_t kTokenHttp = uint64_t(1) << 63;

// What a kFlagHttp payload starts with (little-endian, no padding).
enum class HttpBody : uint8_t { octets = 0, text = 1, json = 2 };
struct HttpHead {
  uint16_t status;  // 200, or 500 for a worker's exception
  uint8_t body;     // HttpBody: the Content-Type the front writes
  uint8_t reserved;
};
static_assert(sizeof(HttpHead) == 4, "HttpHead is part of the wire format");

// ---- request statuses ----

// What submitting or waiting for a request came to.
enum class [[nodiscard]] Status : int {
  ok = 0,
  backlog_full = 1,     // no free ledger slot, and the caller does not wait
  backlog_timeout = 2,  // waited for a slot until the deadline
  result_timeout = 3,   // the result did not arrive by the deadline
  closed = 4,           // the server (or the stream) accepts no more requests
  push_timeout = 5,     // the entry ring stayed full until the deadline
};

// ---- stream outcomes (StreamWindow::drain) ----

enum class Outcome : int {
  ready = 0,      // the head's result is in its slot
  local = 1,      // the head is an input that failed before it was sent
  timed_out = 2,  // the head ran out of time; its result will be dropped
  end = 3,        // the window is finished and empty
  pending = 4,    // nothing yet (the wait was cut short to check for signals)
};

// ---- control ring (aux field of a worker's report) ----

enum class Control : uint64_t {
  ready = 1,        // the worker is built and serving; payload: its name (pickled)
  init_failed = 2,  // its __init__ raised; payload: the pickled exception
  log = 3,          // a logging record of a worker process; payload: its pickled attribute dict
  event = 4,        // a lifecycle event seen by the guardian; payload: "<level>\x1f<text>" (UTF-8)
  access = 5,       // an access-log line of the HTTP front; payload: UTF-8 text
};

// ---- the fds a worker process is handed (see python/mpserver/_worker/child.py) ----

enum ChildFd : int {
  kFdBoot = 3,     // bootstrap data: a memfd holding a pickle
  kFdControl = 4,  // the server's control ring
  kFdInput = 5,    // the servlet's input ring
  kFdOutput = 6,   // the ring the servlet's results go to
  kFdClaims = 7,   // the servlet's claim table (claims.hpp)
  kFdBoard = 8,    // the server's cancel board (cancel_board.hpp)
  kFdMeter = 9,    // the server's meter board (meter.hpp)
};

// ---- sizes ----

// A payload at least this large is "large": a worker copies it straight into
// its Python object, the collector offers it to the PayloadHome
// (payload_home.hpp), and the Python codec sends buffers this large out of
// band.  Below it, the extra bookkeeping costs more than the copy it saves.
inline constexpr uint64_t kLargePayloadBytes = 64 << 10;
// Data bytes of a servlet's input ring, an ensemble's rings and the output
// ring (messages larger than a quarter of a ring stream through in frames).
inline constexpr size_t kInputRingBytes = size_t(8) << 20;
inline constexpr size_t kOutputRingBytes = size_t(8) << 20;
inline constexpr size_t kControlRingBytes = size_t(256) << 10;
// Items one worker can hold at once with its death still noticed
// (claims.hpp); the claim table is a sparse memfd, so unused slots cost nothing.
inline constexpr uint32_t kClaimSlots = 65536;
// An ensemble ticket has 8 bits for the member (ensemble_router.hpp).
inline constexpr size_t kMaxEnsembleMembers = 255;

}  // namespace mps
