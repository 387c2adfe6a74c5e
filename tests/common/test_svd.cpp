// The test-only Jacobi SVD (tests/common/svd.hpp) against matrices built as U diag(s) V^T.
#include <catch2/catch.hpp>

#include <cmath>

#include "common/svd.hpp"

using namespace pg;
using namespace pg::testing;

TEST_CASE("svd: random_orthogonal is orthogonal", "[ns][svd]") {
  Rng rng(3);
  for (int n : {1, 2, 7, 50}) {
    const auto Q = random_orthogonal(n, rng);
    double err = 0;
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) {
        double d = 0;
        for (int t = 0; t < n; ++t) d += Q[i * n + t] * Q[j * n + t];
        err = std::max(err, std::fabs(d - (i == j ? 1.0 : 0.0)));
      }
    CAPTURE(n);
    CHECK(err < 1e-13);
  }
}

TEST_CASE("svd: Jacobi recovers prescribed singular values and vectors", "[ns][svd]") {
  // Measured: |s_i - s_i^true| / s_1 <= 4e-14 up to 256 x 263, condition numbers to 1e6.
  const uint64_t seed = 4;
  CAPTURE(seed);
  Rng rng(seed);
  struct Shape {
    int rows, cols;
  };
  for (Shape sh : {Shape{1, 5}, Shape{5, 1}, Shape{8, 8}, Shape{30, 12}, Shape{12, 30}, Shape{256, 263}}) {
    const int k = std::min(sh.rows, sh.cols);
    auto s = log_spaced(k, 4.0, 1e6);
    const auto c = with_singular_values(sh.rows, sh.cols, s, rng);
    const auto svd = jacobi_svd(c.W.data(), sh.rows, sh.cols, true);
    CAPTURE(sh.rows, sh.cols);
    REQUIRE(int(svd.s.size()) == k);
    double err = 0;
    for (int i = 0; i < k; ++i) err = std::max(err, std::fabs(svd.s[i] - s[i]) / s[0]);
    CHECK(err < 1e-12);
    // Reconstruction U diag(s) V^T = W, and the vectors agree with the construction up to sign
    // for the well-separated values.
    double rec = 0;
    for (int i = 0; i < sh.rows; ++i)
      for (int j = 0; j < sh.cols; ++j) {
        double w = 0;
        for (int t = 0; t < k; ++t) w += svd.U[i * k + t] * svd.s[t] * svd.V[j * k + t];
        rec = std::max(rec, std::fabs(w - c.W[i * sh.cols + j]));
      }
    CHECK(rec < 1e-12 * s[0]);
    for (int t = 0; t < std::min(k, 3); ++t) {
      double dot = 0;
      for (int i = 0; i < sh.rows; ++i) dot += svd.U[i * k + t] * c.U[i * sh.rows + t];
      CHECK(std::fabs(dot) == Approx(1.0).epsilon(1e-9));
    }
  }
}
