// The vector exp and tanh of simd.hpp against std::exp / std::tanh in double, through
// PG_SIMD_CLONES loops like the ops use (so the clone this machine picks is the one tested),
// including the special values and the 8-lane tails.
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/simd.hpp"

namespace {

using pg::cpu::simd::f32x8;

PG_SIMD_CLONES
void map_exp(float* out, const float* in, int64_t n) {
  namespace s = pg::cpu::simd;
  int64_t i = 0;
  for (; i + s::kLanes <= n; i += s::kLanes) s::store(out + i, s::exp_nonpositive(s::load(in + i)));
  if (i < n) s::store_tail(out + i, s::exp_nonpositive(s::load_tail(in + i, n - i, 0.0f)), n - i);
}

PG_SIMD_CLONES
void map_tanh(float* out, const float* in, int64_t n) {
  namespace s = pg::cpu::simd;
  int64_t i = 0;
  for (; i + s::kLanes <= n; i += s::kLanes) s::store(out + i, s::tanh(s::load(in + i)));
  if (i < n) s::store_tail(out + i, s::tanh(s::load_tail(in + i, n - i, 0.0f)), n - i);
}

// Largest |got - want| / |want| over the finite nonzero wants.
double max_rel_err(const std::vector<float>& in, const std::vector<float>& got,
                   double (*f)(double)) {
  double worst = 0.0;
  for (size_t i = 0; i < in.size(); ++i) {
    const double want = f(double(in[i]));
    if (want != 0.0 && std::isfinite(want))
      worst = std::max(worst, std::abs(double(got[i]) - want) / std::abs(want));
  }
  return worst;
}

}  // namespace

TEST_CASE("simd exp_nonpositive is accurate on [-87, 0] and handles 0, -inf, NaN", "[ops]") {
  std::vector<float> x;
  for (int i = 0; i <= 400003; ++i) x.push_back(-87.0f * float(i) / 400003.0f);  // odd count: tail
  std::vector<float> y(x.size());
  map_exp(y.data(), x.data(), int64_t(x.size()));
  const double err = max_rel_err(x, y, [](double v) { return std::exp(v); });
  INFO("max relative error " << err);
  CHECK(err < 5e-7);  // a few float ulps

  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> special = {0.0f, -0.0f, -inf, std::nanf(""), -100.0f, -1e-30f, -88.0f};
  std::vector<float> out(special.size());
  map_exp(out.data(), special.data(), int64_t(special.size()));
  CHECK(out[0] == 1.0f);
  CHECK(out[1] == 1.0f);
  CHECK(out[2] == 0.0f);
  CHECK(std::isnan(out[3]));
  CHECK(out[4] == 0.0f);
  CHECK(out[5] == 1.0f);
  CHECK(out[6] == 0.0f);
}

TEST_CASE("simd tanh is accurate on [-20, 20] and handles 0, ±inf, NaN", "[ops]") {
  std::vector<float> x;
  for (int i = -200001; i <= 200001; ++i) x.push_back(20.0f * float(i) / 200001.0f);
  for (float v : {0.25f, std::nextafter(0.25f, 0.0f), -0.25f, 1e-30f, -3e-8f, 1e-3f})
    x.push_back(v);
  std::vector<float> y(x.size());
  map_tanh(y.data(), x.data(), int64_t(x.size()));
  const double err = max_rel_err(x, y, [](double v) { return std::tanh(v); });
  INFO("max relative error " << err);
  CHECK(err < 5e-7);

  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> special = {0.0f, inf, -inf, std::nanf(""), 100.0f, -100.0f};
  std::vector<float> out(special.size());
  map_tanh(out.data(), special.data(), int64_t(special.size()));
  CHECK(out[0] == 0.0f);
  CHECK(out[1] == 1.0f);
  CHECK(out[2] == -1.0f);
  CHECK(std::isnan(out[3]));
  CHECK(out[4] == 1.0f);
  CHECK(out[5] == -1.0f);
}
