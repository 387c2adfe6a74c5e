// Timing of Newton-Schulz's symmetric products on the CPU: X X^T (m x n, m <= n) and A A (m x m)
// by cblas_ssyrk (one triangle, then mirrored) against a full cblas_sgemm, single-threaded as in
// training (OpenBLAS runs with one thread; the pool splits a group's matrices), and a whole
// 5-step NS at the Muon shapes of configs/tiny.json and GPT-2 small. Hidden; run with
//   ./build/polargpt_tests "[.bench-ns]"
#include <catch2/catch.hpp>

#include <cblas.h>

#include <chrono>
#include <cstdio>
#include <vector>

#include "common/timing.hpp"
#include "core/rng.hpp"
#include "optim/dense.hpp"
#include "optim/newton_schulz.hpp"

using namespace pg;

using pg::test::best_of;

TEST_CASE("bench: X X^T and A A by syrk vs gemm; whole Newton-Schulz", "[.bench-ns]") {
  openblas_set_num_threads(1);
  struct Shape {
    int m, n;
  };
  Rng rng(1);
  std::printf("%-12s %12s %12s %7s %12s %12s %7s\n", "m x n", "XXt gemm ms", "XXt syrk ms", "ratio", "AA gemm ms",
              "AA syrk ms", "ratio");
  for (const Shape s : {Shape{128, 128}, Shape{128, 512}, Shape{256, 1024}, Shape{768, 768}, Shape{768, 3072}}) {
    std::vector<float> X(size_t(s.m) * s.n), A(size_t(s.m) * s.m), B(A.size());
    for (float& x : X) x = float(rng.normal());
    const int reps = s.m >= 768 ? 3 : 20;
    const double xx_gemm = best_of(reps, [&] { dense::gemm(false, true, s.m, s.m, s.n, 1.0f, X.data(), s.n, X.data(), s.n, 0.0f, A.data(), s.m); });
    const double xx_syrk = best_of(reps, [&] {
      dense::syrk(false, s.m, s.n, 1.0f, X.data(), s.n, 0.0f, A.data(), s.m);
      dense::mirror_upper(A.data(), s.m);
    });
    const double aa_gemm = best_of(reps, [&] { dense::gemm(false, false, s.m, s.m, s.m, 1.0f, A.data(), s.m, A.data(), s.m, 0.0f, B.data(), s.m); });
    const double aa_syrk = best_of(reps, [&] {
      dense::syrk(false, s.m, s.m, 1.0f, A.data(), s.m, 0.0f, B.data(), s.m);
      dense::mirror_upper(B.data(), s.m);
    });
    std::printf("%4d x %-5d %12.3f %12.3f %7.2f %12.3f %12.3f %7.2f\n", s.m, s.n, 1e3 * xx_gemm, 1e3 * xx_syrk,
                xx_gemm / xx_syrk, 1e3 * aa_gemm, 1e3 * aa_syrk, aa_gemm / aa_syrk);
  }
  const auto sched = ns_schedule("polar-express", 5, 1.01);
  for (const Shape s : {Shape{128, 128}, Shape{128, 512}, Shape{768, 3072}}) {
    std::vector<float> X(size_t(s.m) * s.n), Y(X.size());
    for (float& x : X) x = float(rng.normal());
    for (NsPrecision p : {NsPrecision::fp32, NsPrecision::bf16}) {
      const double t = best_of(3, [&] {
        Y = X;
        newton_schulz_cpu(Y.data(), 1, s.m, s.n, sched, p, 1.01);
      });
      std::printf("NS polar-express x5 %-4s %4d x %-5d %9.3f ms\n", p == NsPrecision::fp32 ? "fp32" : "bf16", s.m, s.n,
                  1e3 * t);
    }
  }
}
