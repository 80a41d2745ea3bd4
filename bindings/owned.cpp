#include "owned.hpp"

namespace mpb {

void throw_not_owned(const char* what, int32_t owner) {
  throw std::runtime_error(
      std::string("this ") + what + " belongs to the mpserver Server of process " + std::to_string(owner) +
      "; it cannot be used in a forked child (pid " + std::to_string(mps::self_pid()) +
      "): start a new Server in the child, or start child processes with the 'spawn' or 'forkserver' method");
}

}  // namespace mpb
