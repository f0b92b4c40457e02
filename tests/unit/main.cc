// Catch2 provides main() for the unit test binary.
//
// GCC 12 with -fsanitize=address reports a false -Wmaybe-uninitialized inside
// libstdc++'s <regex>, which Catch2's main pulls in; the project builds with
// -Werror, so the warning is silenced for this one file.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
