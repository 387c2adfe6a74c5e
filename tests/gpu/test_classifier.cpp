// The fused classifier (kernels/classifier.cuh) against the CPU reference chain
// softcap_fwd -> cross_entropy_fwd / cross_entropy_bwd -> softcap_bwd, in float64 on the same bf16
// logits. Tolerances: losses (fp32) and their sum kTolF32; dlogits (bf16) kTolBf16.
#include <catch2/catch.hpp>

#include <cmath>

#include "backend/cpu/ops.hpp"
#include "gpu_testing.hpp"
#include "kernels/classifier.cuh"

using namespace pg;
using namespace pg::test;

TEST_CASE("gpu fused classifier: loss and dlogits, with and without soft cap", "[gpu][classifier]") {
  const uint64_t seed = 941;
  CAPTURE(seed);
  Rng rng(seed);
  const int N = 40;
  struct Case { int V, V_padded; double cap; };
  // 1024 and 50304 (GPT-2's padded vocabulary) stage rows in shared memory; 781 and 777 do not
  // (unaligned rows).
  for (const Case& c : {Case{1000, 1024, 0.0}, Case{1000, 1024, 15.0}, Case{777, 781, 0.0}, Case{777, 777, 10.0},
                        Case{50257, 50304, 0.0}, Case{50257, 50304, 30.0}}) {
    CAPTURE(c.V, c.V_padded, c.cap);
    const Vec logits = round_bf16(randn(rng, int64_t(N) * c.V_padded, 4.0));
    const auto targets = rand_ints(rng, N, c.V);
    // Reference on the unpadded rows.
    Vec z(size_t(N) * c.V);
    for (int n = 0; n < N; ++n)
      for (int v = 0; v < c.V; ++v) z[size_t(n) * c.V + v] = logits[size_t(n) * c.V_padded + v];
    Vec zc = z;
    if (c.cap > 0) cpu::softcap_fwd(zc.data(), z.data(), int64_t(z.size()), c.cap);
    Vec losses(N);
    int64_t n_correct = 0;
    cpu::cross_entropy_fwd(losses.data(), &n_correct, zc.data(), targets.data(), N, c.V);
    const double dloss = 2.0 / N;
    Vec dz(z.size());
    cpu::cross_entropy_bwd(dz.data(), zc.data(), targets.data(), N, c.V, dloss);
    if (c.cap > 0) cpu::softcap_bwd(dz.data(), dz.data(), zc.data(), int64_t(z.size()), c.cap);
    Vec dref(logits.size(), 0.0);
    for (int n = 0; n < N; ++n)
      for (int v = 0; v < c.V; ++v) dref[size_t(n) * c.V_padded + v] = dz[size_t(n) * c.V + v];

    auto d_logits = upload_bf16(logits);
    auto d_targets = upload(targets);
    cuda::DeviceBuffer<float> d_losses(N);
    cuda::DeviceBuffer<int32_t> d_correct(N);
    kernels::fused_classifier(d_logits.data(), d_losses.data(), d_correct.data(), d_targets.data(), N, c.V,
                              c.V_padded, float(dloss), float(c.cap), false, nullptr);
    CHECK(rel_diff(download(d_losses), losses) < kTolF32);
    int64_t gpu_correct = 0;
    for (int32_t x : d_correct.download()) gpu_correct += x;
    CHECK(gpu_correct == n_correct);
    // The forward's loss and accuracy sums on the device.
    cuda::DeviceBuffer<double> d_sums(2);
    kernels::loss_sums(d_sums.data(), d_losses.data(), d_correct.data(), N, nullptr);
    const std::vector<double> sums = d_sums.download();
    double ref_sum = 0.0;
    for (double l : losses) ref_sum += l;
    CHECK(std::abs(sums[0] - ref_sum) < kTolF32 * std::abs(ref_sum));
    CHECK(sums[1] == double(n_correct));
    CHECK(rel_diff(download(d_logits), logits) == 0.0);  // evaluation leaves the logits alone
    kernels::fused_classifier(d_logits.data(), d_losses.data(), nullptr, d_targets.data(), N, c.V, c.V_padded,
                              float(dloss), float(c.cap), true, nullptr);
    CHECK(rel_diff(download(d_losses), losses) < kTolF32);
    CHECK(rel_diff(download(d_logits), dref) < kTolBf16);
  }
}
