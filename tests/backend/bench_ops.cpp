// Timing of the CPU trainer's hot spots at the default run's shapes (N = 2048 rows, d_model 128,
// V = 50257): the LM-head GEMM and the cross-entropy. Hidden; run with
//   ./build/polargpt_tests "[.bench]"
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <vector>

#include "backend/cpu/ops.hpp"
#include "backend/cpu/parallel.hpp"
#include "backend/ops_testing.hpp"
#include "common/timing.hpp"

using namespace pg::cpu;

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
