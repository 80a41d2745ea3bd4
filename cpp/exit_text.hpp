// exit_text.hpp — how a worker process ended, in words: "was killed by
// signal 9 (SIGKILL)", "exited with code 3".  The one wording of a worker's
// end for the guardian's crash report (guardian.cpp) and the HTTP front's
// 502 body (http_message.cpp).
//
// Signal names come from the table below, not from glibc: sigabbrev_np()
// exists only since glibc 2.32, newer than the manylinux_2_28 wheels may
// need, and strsignal() gives a description ("Killed"), not the name.
//
// Invariants
//   * signal_name() returns a static string or nullptr (a real-time or
//     unknown signal number); it never allocates and is safe in any thread.
//   * describe_exit() takes a wait status as waitpid() fills it; a status
//     that is neither an exit nor a signal death is shown as a number.
#pragma once

#include <sys/wait.h>

#include <csignal>
#include <string>

namespace mps {

struct SignalName {
  int sig;
  const char* name;
};

// The standard signals, by their macros (the numbers differ between
// architectures).
inline constexpr SignalName kSignalNames[] = {
    {SIGHUP, "SIGHUP"},   {SIGINT, "SIGINT"},       {SIGQUIT, "SIGQUIT"}, {SIGILL, "SIGILL"},
    {SIGTRAP, "SIGTRAP"}, {SIGABRT, "SIGABRT"},     {SIGBUS, "SIGBUS"},   {SIGFPE, "SIGFPE"},
    {SIGKILL, "SIGKILL"}, {SIGUSR1, "SIGUSR1"},     {SIGSEGV, "SIGSEGV"}, {SIGUSR2, "SIGUSR2"},
    {SIGPIPE, "SIGPIPE"}, {SIGALRM, "SIGALRM"},     {SIGTERM, "SIGTERM"}, {SIGSTKFLT, "SIGSTKFLT"},
    {SIGCHLD, "SIGCHLD"}, {SIGCONT, "SIGCONT"},     {SIGSTOP, "SIGSTOP"}, {SIGTSTP, "SIGTSTP"},
    {SIGTTIN, "SIGTTIN"}, {SIGTTOU, "SIGTTOU"},     {SIGURG, "SIGURG"},   {SIGXCPU, "SIGXCPU"},
    {SIGXFSZ, "SIGXFSZ"}, {SIGVTALRM, "SIGVTALRM"}, {SIGPROF, "SIGPROF"}, {SIGWINCH, "SIGWINCH"},
    {SIGIO, "SIGIO"},     {SIGPWR, "SIGPWR"},       {SIGSYS, "SIGSYS"}};

// "SIGKILL" for 9; nullptr for a signal it has no name for.
constexpr const char* signal_name(int sig) noexcept {
  for (const SignalName& s : kSignalNames)
    if (s.sig == sig) return s.name;
  return nullptr;
}

// "was killed by signal 9 (SIGKILL)", "exited with code 3".
inline std::string describe_exit(int status) {
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* name = signal_name(sig);
    return "was killed by signal " + std::to_string(sig) + (name ? std::string(" (") + name + ")" : "");
  }
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  return "ended (wait status " + std::to_string(status) + ")";
}

}  // namespace mps
