// Timing of the CPU trainer's hot spots at the default run's shapes (N = 2048 rows, d_model 128,
// V = 50257): the LM-head GEMM and the cross-entropy. Hidden; run with
//   ./build/polargpt_tests "[.bench]"
#include <catch2/catch.hpp>
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <vector>

#include "backend/cpu/blas.hpp"
#include "backend/cpu/ops.hpp"
#include "backend/cpu/parallel.hpp"
#include "backend/ops_testing.hpp"
#include "common/timing.hpp"

using namespace pg::cpu;

using pg::test::best_cpu_of;
using pg::test::best_of;

TEST_CASE("bench: LM-head matmul and cross-entropy at N=2048, C=128, V=50257 (fp32)", "[.bench]") {
  const int N = 2048, C = 128, V = 50257;
  pg::Rng rng(1);
  const auto x = pg::test::cast<float>(pg::test::randn(rng, int64_t(N) * C));
  const auto w = pg::test::cast<float>(pg::test::randn(rng, int64_t(V) * C, 0.02));
  const auto targets = pg::test::rand_ints(rng, N, V);
  std::vector<float> logits(size_t(N) * V), losses(N), dx(size_t(N) * C, 0.f),
      dw(size_t(V) * C, 0.f);
  std::printf("threads: %d\n", num_threads());

  const double t_mm =
      best_of(3, [&] { matmul_fwd(logits.data(), x.data(), w.data(), nullptr, N, C, V); });
  std::printf("matmul_fwd  (%d x %d x %d): %7.1f ms  (%.1f GFLOP/s)\n", N, C, V, 1e3 * t_mm,
              2.0 * N * C * V / t_mm * 1e-9);
  const double t_ce_f = best_of(
      3, [&] { cross_entropy_fwd(losses.data(), nullptr, logits.data(), targets.data(), N, V); });
  std::printf("cross_entropy_fwd (%d x %d): %7.1f ms\n", N, V, 1e3 * t_ce_f);
  std::vector<float> capped(logits.size());
  const double t_cap =
      best_of(3, [&] { softcap_fwd(capped.data(), logits.data(), int64_t(logits.size()), 15.0); });
  std::printf("softcap_fwd (%d x %d): %7.1f ms\n", N, V, 1e3 * t_cap);
  std::vector<float> dlogits(logits.size());
  const double t_ce_b = best_of(
      3, [&] { cross_entropy_bwd(dlogits.data(), logits.data(), targets.data(), N, V, 1.0 / N); });
  std::printf("cross_entropy_bwd (%d x %d): %7.1f ms\n", N, V, 1e3 * t_ce_b);
  const double t_mm_b = best_of(2, [&] {
    matmul_bwd(dx.data(), dw.data(), nullptr, dlogits.data(), x.data(), w.data(), N, C, V);
  });
  std::printf("matmul_bwd  (dinp + dw):      %7.1f ms\n", 1e3 * t_mm_b);
  // One MLP activation of the default model: [2048, 4·128].
  const auto h = pg::test::cast<float>(pg::test::randn(rng, int64_t(N) * 4 * C));
  std::vector<float> act(h.size()), dact(h.size(), 0.f);
  const double t_gf = best_of(3, [&] { gelu_fwd(act.data(), h.data(), int64_t(h.size())); });
  const double t_gb =
      best_of(3, [&] { gelu_bwd(dact.data(), act.data(), h.data(), int64_t(h.size())); });
  std::printf("gelu fwd / bwd (%d x %d): %5.2f / %5.2f ms\n", N, 4 * C, 1e3 * t_gf, 1e3 * t_gb);
  SUCCEED();
}

// The LM head's three GEMMs and its loss at tiny.json's shapes, one thread, CPU time (so other
// load on the machine matters less): the layer's blocking against the previous one (every GEMM
// cut into 64-row blocks, which repacks the 25.7 MB weight per block in the forward and the input
// gradient), and the cross-entropy backward recomputing the row statistics against the one reading
// the forward's logsumexps. Run it once per OpenBLAS kernel set:
//   OPENBLAS_CORETYPE=Haswell  ./build/polargpt_tests "[.bench-head]"
//   OPENBLAS_CORETYPE=SKYLAKEX ./build/polargpt_tests "[.bench-head]"
TEST_CASE("bench: LM-head GEMMs and loss, 1 thread, CPU time: blocking and loss backward", "[.bench-head]") {
  const int N = 2048, C = 128, V = 50257;
  const int saved_threads = num_threads();
  set_num_threads(1);
  pg::Rng rng(2);
  const auto x = pg::test::cast<float>(pg::test::randn(rng, int64_t(N) * C));
  const auto w = pg::test::cast<float>(pg::test::randn(rng, int64_t(V) * C, 0.02));
  const auto targets = pg::test::rand_ints(rng, N, V);
  std::vector<float> logits(size_t(N) * V), losses(N), lse(N), dx(size_t(N) * C, 0.f), dw(size_t(V) * C, 0.f);
  ensure_single_threaded_blas();
  const char* ct = std::getenv("OPENBLAS_CORETYPE");
  std::printf("OPENBLAS_CORETYPE=%s, 1 thread, best of 3, CPU ms (GFLOP/s)\n", ct ? ct : "(unset)");
  const double gf = 2.0 * N * C * V * 1e-9;
  const auto row_blocks = [&](bool ta, bool tb, int M, int Nc, int K, const float* A, int lda, const float* B,
                              int ldb, float beta, float* Cm, int ldc) {
    for (int m0 = 0; m0 < M; m0 += 64) {
      const int m = std::min(64, M - m0);
      pg::dense::gemm(ta, tb, m, Nc, K, 1.f, ta ? A + m0 : A + int64_t(m0) * lda, lda, B, ldb, beta,
                      Cm + int64_t(m0) * ldc, ldc);
    }
  };
  const auto line = [&](const char* what, double old_s, double new_s) {
    std::printf("%-26s 64-row blocks %6.1f (%5.1f) | now %6.1f (%5.1f) | %.2fx\n", what, 1e3 * old_s, gf / old_s,
                1e3 * new_s, gf / new_s, old_s / new_s);
  };
  line("logits = x w^T", best_cpu_of(3, [&] { row_blocks(false, true, N, V, C, x.data(), C, w.data(), C, 0.f, logits.data(), V); }),
       best_cpu_of(3, [&] { matmul_fwd(logits.data(), x.data(), w.data(), nullptr, N, C, V); }));
  cross_entropy_fwd(losses.data(), nullptr, logits.data(), targets.data(), N, V, lse.data());
  std::vector<float> dlogits(logits.size());
  cross_entropy_bwd(dlogits.data(), logits.data(), targets.data(), N, V, 1.0 / N);
  line("dx = dlogits w", best_cpu_of(3, [&] { row_blocks(false, false, N, C, V, dlogits.data(), V, w.data(), C, 1.f, dx.data(), C); }),
       best_cpu_of(3, [&] { matmul_bwd(dx.data(), (float*)nullptr, (float*)nullptr, dlogits.data(), x.data(), w.data(), N, C, V); }));
  const int64_t rows = std::max<int64_t>(64, (V + 31) / 32);  // the weight gradient's blocks (unchanged)
  const double t_dw = best_cpu_of(3, [&] {
    matmul_bwd((float*)nullptr, dw.data(), (float*)nullptr, dlogits.data(), x.data(), w.data(), N, C, V);
  });
  std::printf("%-26s %ld-row blocks %6.1f (%5.1f)\n", "dw = dlogits^T x", long(rows), 1e3 * t_dw, gf / t_dw);
  const double t_fwd = best_cpu_of(3, [&] {
    cross_entropy_fwd(losses.data(), nullptr, logits.data(), targets.data(), N, V, lse.data());
  });
  const double t_bwd = best_cpu_of(3, [&] { cross_entropy_bwd(dlogits.data(), logits.data(), targets.data(), N, V, 1.0 / N); });
  const double t_lse = best_cpu_of(3, [&] {
    cross_entropy_bwd_lse(dlogits.data(), logits.data(), lse.data(), targets.data(), N, V, 1.0 / N);
  });
  std::printf("cross_entropy_fwd %6.1f ms | bwd recomputing %6.1f ms | bwd from lse %6.1f ms | %.2fx\n", 1e3 * t_fwd,
              1e3 * t_bwd, 1e3 * t_lse, t_bwd / t_lse);
  set_num_threads(saved_threads);
  SUCCEED();
}
