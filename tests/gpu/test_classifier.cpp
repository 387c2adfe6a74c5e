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

namespace {

struct Case { int N, V, V_padded; double cap; };

// Random bf16 logits; with `confident`, every third row's target is its argmax raised by 8 (a
// softmax near 1 at the target, where dloss·(p_t - 1) cancels) and the next row's target its
// plain argmax (correct = 1).
struct Problem {
  Vec logits;
  std::vector<int32_t> targets;
};

Problem make_problem(Rng& rng, const Case& c, bool confident) {
  Problem p{round_bf16(randn(rng, int64_t(c.N) * c.V_padded, 4.0)), rand_ints(rng, c.N, c.V)};
  if (confident)
    for (int n = 0; n < c.N; ++n) {
      if (n % 3 == 2) continue;
      double* row = p.logits.data() + size_t(n) * c.V_padded;
      int arg = 0;
      for (int v = 1; v < c.V; ++v)
        if (row[v] > row[arg]) arg = v;
      p.targets[size_t(n)] = arg;
      if (n % 3 == 0) row[arg] = round_bf16(Vec{row[arg] + 8.0})[0];
    }
  return p;
}

// Runs the evaluation (losses, correct, loss_sums, logits untouched) and the training call
// (losses, dlogits) with `split` and checks both against the reference.
void check_classifier(const Case& c, const Problem& p, int split) {
  const int N = c.N;
  // Reference on the unpadded rows.
  Vec z(size_t(N) * c.V);
  for (int n = 0; n < N; ++n)
    for (int v = 0; v < c.V; ++v) z[size_t(n) * c.V + v] = p.logits[size_t(n) * c.V_padded + v];
  Vec zc = z;
  if (c.cap > 0) cpu::softcap_fwd(zc.data(), z.data(), int64_t(z.size()), c.cap);
  Vec losses(N);
  int64_t n_correct = 0;
  cpu::cross_entropy_fwd(losses.data(), &n_correct, zc.data(), p.targets.data(), N, c.V);
  const double dloss = 2.0 / N;
  Vec dz(z.size());
  cpu::cross_entropy_bwd(dz.data(), zc.data(), p.targets.data(), N, c.V, dloss);
  if (c.cap > 0) cpu::softcap_bwd(dz.data(), dz.data(), zc.data(), int64_t(z.size()), c.cap);
  Vec dref(p.logits.size(), 0.0);
  for (int n = 0; n < N; ++n)
    for (int v = 0; v < c.V; ++v) dref[size_t(n) * c.V_padded + v] = dz[size_t(n) * c.V + v];

  auto d_logits = upload_bf16(p.logits);
  auto d_targets = upload(p.targets);
  cuda::DeviceBuffer<float> d_losses(N);
  cuda::DeviceBuffer<int32_t> d_correct(N);
  kernels::fused_classifier(d_logits.data(), d_losses.data(), d_correct.data(), d_targets.data(), N, c.V,
                            c.V_padded, float(dloss), float(c.cap), false, nullptr, split);
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
  CHECK(rel_diff(download(d_logits), p.logits) == 0.0);  // evaluation leaves the logits alone
  kernels::fused_classifier(d_logits.data(), d_losses.data(), nullptr, d_targets.data(), N, c.V, c.V_padded,
                            float(dloss), float(c.cap), true, nullptr, split);
  CHECK(rel_diff(download(d_losses), losses) < kTolF32);
  const Vec got = download(d_logits);
  CHECK(rel_diff(got, dref) < kTolBf16);
  // Row by row too: a confident row's gradients are small beside the others'.
  double worst = 0.0;
  for (int n = 0; n < N; ++n) {
    const size_t o = size_t(n) * c.V_padded;
    const Vec g(got.begin() + o, got.begin() + o + c.V_padded), r(dref.begin() + o, dref.begin() + o + c.V_padded);
    worst = std::max(worst, rel_diff(g, r));
  }
  CHECK(worst < kTolBf16);
}

}  // namespace

TEST_CASE("gpu fused classifier: loss and dlogits, with and without soft cap", "[gpu][classifier]") {
  const uint64_t seed = 941;
  CAPTURE(seed);
  Rng rng(seed);
  // 1024 and 50304 (GPT-2's padded vocabulary) take the split kernel; 781 and 777 do not
  // (unaligned rows).
  for (const Case& c : {Case{40, 1000, 1024, 0.0}, Case{40, 1000, 1024, 15.0}, Case{40, 777, 781, 0.0},
                        Case{40, 777, 777, 10.0}, Case{40, 50257, 50304, 0.0}, Case{40, 50257, 50304, 30.0}}) {
    CAPTURE(c.N, c.V, c.V_padded, c.cap);
    check_classifier(c, make_problem(rng, c, false), 0);
  }
}

TEST_CASE("gpu fused classifier: every split of a row over a cluster matches the reference", "[gpu][classifier]") {
  const uint64_t seed = 947;
  CAPTURE(seed);
  Rng rng(seed);
  // Odd row counts, padded rows (a last pack part logits, part padding), chunks that end short of
  // the row, and with V_padded = 72 over 8 CTAs, CTAs whose chunk is empty or padding alone.
  for (const Case& c : {Case{37, 50257, 50304, 0.0}, Case{37, 50257, 50304, 30.0}, Case{33, 999, 1000, 0.0},
                        Case{33, 999, 1000, 15.0}, Case{21, 61, 72, 0.0}, Case{21, 64, 64, 5.0}}) {
    const Problem p = make_problem(rng, c, true);
    for (int split : {1, 2, 4, 8}) {
      CAPTURE(c.N, c.V, c.V_padded, c.cap, split);
      check_classifier(c, p, split);
    }
  }
}
