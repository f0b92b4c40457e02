// Entry point of dhfs_mounted_tests (a separate executable from the unit tests).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
