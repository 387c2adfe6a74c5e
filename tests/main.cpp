// The one Catch2 v2 main for every CPU test. Random inputs come from pg::Rng seeded per test;
// tests print their seed on failure through INFO/CAPTURE.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
