#include <catch2/catch.hpp>

#include "core/rng.hpp"

TEST_CASE("rng: same seed gives the same stream, state round-trips", "[core]") {
  pg::Rng a(42), b(42);
  for (int i = 0; i < 10; ++i) REQUIRE(a.next_u64() == b.next_u64());
  auto s = a.state();
  const uint64_t x = a.next_u64();
  b.set_state(s);
  REQUIRE(b.next_u64() == x);
  pg::Rng c(43);
  REQUIRE(c.next_u64() != pg::Rng(42).next_u64());
}

TEST_CASE("rng: normal has mean ~0 and variance ~1", "[core]") {
  pg::Rng r(7);
  double s = 0, s2 = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double x = r.normal();
    s += x;
    s2 += x * x;
  }
  REQUIRE(std::abs(s / n) < 0.01);
  REQUIRE(std::abs(s2 / n - 1.0) < 0.02);
}
