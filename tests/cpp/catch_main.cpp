// Catch2's runner, in a translation unit of its own so that it compiles once
// per build, in parallel with the tests (see run_sanitizers.sh).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
