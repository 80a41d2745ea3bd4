#!/usr/bin/env bash
# Builds tests/cpp/test_core.cpp plain, with ASan+UBSan, and with TSan, and runs each.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$(mktemp -d)}"
src=("$here/test_core.cpp" "$root"/cpp/*.cpp)
# Boost headers (for boost::lockfree): the system's, or the boost-headers wheel's.
boost="$(python3 -c 'import boost_headers; print(boost_headers.get_include())' 2>/dev/null || echo /usr/include)"
flags=(-std=c++20 -g -O1 -I"$root/cpp" -isystem "$boost" -pthread)
g++ "${flags[@]}" -O2 "${src[@]}" -o "$out/test_core" && "$out/test_core"
g++ "${flags[@]}" -fsanitize=address,undefined -fno-omit-frame-pointer "${src[@]}" -o "$out/test_core_asan" \
  && UBSAN_OPTIONS=halt_on_error=1 "$out/test_core_asan"
g++ "${flags[@]}" -fsanitize=thread "${src[@]}" -o "$out/test_core_tsan" && TSAN_OPTIONS=halt_on_error=1 "$out/test_core_tsan"
