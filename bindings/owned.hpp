// owned.hpp — bindings use an engine object only in the process it belongs
// to (cpp/process_local.hpp): in a forked child every use raises a clear
// RuntimeError instead of reaching the parent's threads, locks and rings.
#pragma once

#include <string>

#include "../cpp/process_local.hpp"
#include "module.hpp"

namespace mpb {

[[noreturn]] void throw_not_owned(const char* what, int32_t owner);  // owned.cpp

// *p, if `p` belongs to this process; otherwise raises RuntimeError naming `what`.
template <class T>
T& owned(const mps::ProcessLocal<T>& p, const char* what) {
  if (!mps::owned_here(p)) [[unlikely]]
    throw_not_owned(what, p.get_deleter().owner);
  return *p;
}

}  // namespace mpb
