// Catch2's runner, in a translation unit of its own so that it compiles once
// per build variant, in parallel with the tests (see CMakeLists.txt here).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
