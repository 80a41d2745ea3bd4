// flags.hpp — the caller-owned bits of a frame's flags (bits 8..31; the low
// byte is the ring's framing).  Shared by the engine and the bindings so the
// routers can tell errors and composites apart without knowing Python.
//
// Invariants: every flag here is a distinct bit >= 1 << 8.  No memory
// ordering concerns: these are constants.
#pragma once

#include <cstdint>

namespace mps {

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

}  // namespace mps
