#!/usr/bin/env bash
# Builds the engine's Catch2 tests (tests/cpp/test_core.cpp) plain, with
# ASan+UBSan and with TSan, and runs each.  Usage: run_sanitizers.sh [OUTDIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$(mktemp -d)}"
if ! echo '#include <catch2/catch.hpp>' | g++ -std=c++20 -x c++ -fsyntax-only - 2>/dev/null; then
  echo "Catch2 (v2) headers not found: apt-get install catch2" >&2
  exit 3
fi
# Boost headers (for boost::lockfree): the system's, or the boost-headers wheel's.
boost="$(python3 -c 'import boost_headers; print(boost_headers.get_include())' 2>/dev/null || echo /usr/include)"
base=(-std=c++20 -g -I"$root/cpp" -isystem "$boost" -pthread)

# build NAME FLAGS...: compiles every translation unit (two at a time), links, runs.
build() {
  local name="$1"; shift
  local dir="$out/$name" objs=() pids=() src
  mkdir -p "$dir"
  for src in "$here/catch_main.cpp" "$here/test_core.cpp" "$root"/cpp/*.cpp; do
    local obj="$dir/$(basename "$src" .cpp).o"
    objs+=("$obj")
    g++ "${base[@]}" "$@" -c "$src" -o "$obj" &
    pids+=($!)
    if (( ${#pids[@]} >= 2 )); then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
  done
  for p in "${pids[@]}"; do wait "$p"; done
  g++ "${base[@]}" "$@" "${objs[@]}" -o "$dir/test_core"
  "$dir/test_core"
}

build plain -O2
UBSAN_OPTIONS=halt_on_error=1 build asan -O1 -fsanitize=address,undefined -fno-omit-frame-pointer
TSAN_OPTIONS=halt_on_error=1 build tsan -O1 -fsanitize=thread
