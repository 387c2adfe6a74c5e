// sigma_max monitoring (src/spectral/monitor.hpp and sigma_max_power) against prescribed spectra.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/svd.hpp"
#include "core/error.hpp"
#include "spectral/monitor.hpp"
#include "spectral/power_iteration.hpp"

using namespace pg;
using namespace pg::testing;

namespace {

struct Shape {
  int rows, cols;
};
const Shape kShapes[] = {{16, 16}, {32, 64}, {96, 24}, {64, 64}, {128, 48}, {256, 64}};

// Five spectrum families, sigma_1 = 1 and sigma_2 / sigma_1 <= 0.9: uniform below a gap,
// log-spaced over two decades, 1/(1 + 0.2 i), squared-uniform (many small values), a cluster.
std::vector<double> spectrum(int family, int k, Rng& rng) {
  std::vector<double> s(k);
  for (int i = 0; i < k; ++i) {
    switch (family) {
      case 0: s[i] = rng.uniform(0.01, 0.8); break;
      case 1: s[i] = std::pow(100.0, -double(i) / std::max(1, k - 1)); break;
      case 2: s[i] = 1.0 / (1.0 + 0.2 * i); break;
      case 3: s[i] = 0.8 * std::pow(rng.uniform(), 2); break;
      default: s[i] = rng.uniform(0.5, 0.7); break;
    }
  }
  s[0] = 1.0;
  return s;
}

}  // namespace

TEST_CASE("spectral: ns3-accurate and the W^T W fallback are within 1% of sigma_1", "[spectral]") {
  // 50 power iterations. Measured worst relative error: ns3-accurate 9.1e-4, fallback 2.9e-7 (the
  // polar route iterates on eigenvalues sigma_i, the fallback on sigma_i^2, so it needs about
  // twice the iterations for the same accuracy; at 20 iterations about 3e-2 vs 1.3e-3).
  const uint64_t seed = 41;
  CAPTURE(seed);
  Rng rng(seed);
  for (int family = 0; family < 5; ++family)
    for (Shape sh : kShapes) {
      const int k = std::min(sh.rows, sh.cols);
      const double scale = rng.uniform(0.1, 10.0);
      auto s = spectrum(family, k, rng);
      for (auto& x : s) x *= scale;
      const auto W = to_float(with_singular_values(sh.rows, sh.cols, s, rng).W);
      const double accurate = sigma_max_polar(W.data(), sh.rows, sh.cols, "ns3-accurate", 50);
      const double power = sigma_max_power(W.data(), sh.rows, sh.cols, 50);
      CAPTURE(family, sh.rows, sh.cols, accurate / scale, power / scale);
      CHECK(accurate == Approx(scale).epsilon(1e-2));
      CHECK(power == Approx(scale).epsilon(1e-2));
      CHECK(power <= scale * (1 + 1e-6));
    }
}

TEST_CASE("spectral: ns3-accurate converged is one-sided with bias below 1e-5", "[spectral]") {
  // Enough power iterations (500) to isolate the Newton-Schulz bias: F(x_1) sigma_1 with
  // F(x_1) >= 1 - 1e-5 by the step count. Measured |est / sigma_1 - 1| <= 3.9e-8 (float32 rounding).
  const uint64_t seed = 42;
  CAPTURE(seed);
  Rng rng(seed);
  for (int family = 0; family < 5; ++family)
    for (Shape sh : kShapes) {
      const int k = std::min(sh.rows, sh.cols);
      const auto W = to_float(with_singular_values(sh.rows, sh.cols, spectrum(family, k, rng), rng).W);
      const double est = sigma_max_polar(W.data(), sh.rows, sh.cols, "ns3-accurate", 500);
      CAPTURE(family, sh.rows, sh.cols, est - 1.0);
      CHECK(est <= 1.0 + 1e-6);
      CHECK(est >= 1.0 - 1e-5);
    }
  CHECK(ns3_accurate_steps(16, 16) == 7);
  CHECK(ns3_accurate_steps(768, 3072) == 12);
  CHECK(ns3_accurate_steps(4096, 4096) == 14);
}

TEST_CASE("spectral: ns5-fast is biased within keller5's band [0.68, 1.2024]", "[spectral]") {
  // Eigenvalues of Q^T W are F(x_i) sigma_i with F the keller5 composite: the estimate lies in
  // [0.68, 1.2024] sigma_1 whenever sigma_1 / ||W||_F >= 3e-3. Measured over these spectra and
  // shapes (sigma_1 / ||W||_F >= 0.2): [0.687, 1.134] sigma_1, 500 iterations.
  const uint64_t seed = 43;
  CAPTURE(seed);
  Rng rng(seed);
  double lo = 1e9, hi = 0;
  for (int family = 0; family < 5; ++family)
    for (Shape sh : kShapes) {
      const int k = std::min(sh.rows, sh.cols);
      const auto W = to_float(with_singular_values(sh.rows, sh.cols, spectrum(family, k, rng), rng).W);
      const double est = sigma_max_polar(W.data(), sh.rows, sh.cols, "ns5-fast", 500);
      lo = std::min(lo, est), hi = std::max(hi, est);
      CAPTURE(family, sh.rows, sh.cols, est);
      CHECK(est >= 0.68);
      CHECK(est <= 1.2024);
    }
  CAPTURE(lo, hi);
  CHECK(hi > 1.05);  // the bias is real: ns5-fast is for trends and alarms only
  CHECK(lo < 0.95);
}

TEST_CASE("spectral: batched monitor equals one matrix at a time; bad method is a user error", "[spectral]") {
  Rng rng(44);
  const int rows = 24, cols = 40, batch = 3;
  std::vector<float> W(size_t(batch) * rows * cols);
  for (auto& x : W) x = float(rng.normal());
  for (const char* method : {"ns5-fast", "ns3-accurate"}) {
    std::vector<double> out(batch);
    sigma_max_polar_batched(W.data(), batch, rows, cols, method, 20, out);
    for (int b = 0; b < batch; ++b) CHECK(out[b] == sigma_max_polar(W.data() + b * rows * cols, rows, cols, method, 20));
  }
  CHECK_THROWS_AS(sigma_max_polar(W.data(), rows, cols, "svd", 10), UserError);
}
