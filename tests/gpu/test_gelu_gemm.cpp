// The MLP's GELU GEMMs of our own (kernels/gelu_gemm.cuh) against the float64 CPU reference, on
// random bf16 inputs: the forward's pre-activation and GELU, the backward's GELU gradient and
// its column sums (the fc bias gradient, accumulated onto a random start). Shapes with M not a
// multiple of the 128-row tile (the last tile's rows past M are zero-filled and not stored), one
// and several tiles along N, K from one 64-deep k-block (fewer than the stages) to twelve, and
// more tiles than two per SM (the consumers' staging panels and the ring's phases reused across
// many tiles). Both kernels: Solo and Pair (clusters of two CTAs sharing A's loads, where N is a
// multiple of 256; Solo otherwise).
// Tolerances (gpu_testing.hpp): kTolBf16 for the bf16 outputs; the bias gradient too (fp32 sums
// of fp32 values, against the reference's sums of the same products in float64).
#include <catch2/catch.hpp>

#include "backend/cpu/ops.hpp"
#include "gpu_testing.hpp"
#include "kernels/gelu_gemm.cuh"

using namespace pg;
using namespace pg::test;

namespace {

struct Shape {
  int M, N, K;
  float alpha;
  bool bias;
};

}  // namespace

TEST_CASE("gelu GEMMs: bias + GELU with the pre-activation, and the GELU gradient with bias sums",
          "[gpu][gemm][gelu_gemm]") {
  const Shape sh = GENERATE(Shape{300, 256, 192, 1.f, true}, Shape{128, 128, 64, 0.5f, false},
                            Shape{77, 384, 128, 1.f, true}, Shape{1000, 256, 768, 1.f, true},
                            // 265 tiles: the persistent kernel's blocks (one an SM, up to 132) take
                            // two or three tiles each, both consumers, the stages' phases wrapping
                            Shape{33869, 128, 192, 1.f, true},
                            // 265 pairs of tiles for clusters of two (Pair), 530 tiles for Solo
                            Shape{33869, 256, 128, 0.75f, true});
  const auto kernel = GENERATE(kernels::GeluGemmKernel::Solo, kernels::GeluGemmKernel::Pair);
  const uint64_t seed = 4400 + uint64_t(sh.M * 7 + sh.N * 3 + sh.K);
  CAPTURE(sh.M, sh.N, sh.K, sh.alpha, sh.bias, int(kernel), seed);
  REQUIRE(kernels::gelu_gemm_supported(sh.M, sh.N, sh.K));  // the GPU machines are Hopper
  Rng rng(seed);
  const int M = sh.M, N = sh.N, K = sh.K;
  cuda::Stream stream;

  // Forward: pre = x[M,K]·w[N,K]^T + b, act = gelu(pre).
  const double wscale = 1.0 / std::sqrt(double(K));
  const Vec x = round_bf16(randn(rng, int64_t(M) * K)), w = round_bf16(randn(rng, int64_t(N) * K, 2.0 * wscale));
  const Vec b = sh.bias ? round_bf16(randn(rng, N, 0.5)) : Vec(size_t(N), 0.0);
  auto dx = upload_bf16(x), dw = upload_bf16(w), db = upload_bf16(b);
  cuda::DeviceBuffer<bf16> act(size_t(M) * N), pre(size_t(M) * N);
  Vec pre_ref(size_t(M) * N), act_ref(size_t(M) * N);
  cpu::matmul_fwd(pre_ref.data(), x.data(), w.data(), b.data(), M, K, N);
  cpu::gelu_fwd(act_ref.data(), pre_ref.data(), int64_t(pre_ref.size()));
  kernels::gemm_bias_gelu_aux(act.data(), pre.data(), dx.data(), dw.data(), sh.bias ? db.data() : nullptr, M, N, K,
                              stream.get(), kernel);
  stream.synchronize();
  const Vec pre_gpu = download(pre);
  CHECK(rel_diff(pre_gpu, pre_ref) < kTolBf16);
  CHECK(rel_diff(download(act), act_ref) < kTolBf16);

  // Backward: dpre[M,N] = (alpha·dy[M,K]·w2[K,N]) ∘ gelu'(pre) with the bf16 pre stored above,
  // dbias += Σ_rows dpre.
  const Vec dy = round_bf16(randn(rng, int64_t(M) * K)), w2 = round_bf16(randn(rng, int64_t(K) * N, wscale));
  auto ddy = upload_bf16(dy), dw2 = upload_bf16(w2);
  Vec prod(size_t(M) * N, 0.0);
  for (int m = 0; m < M; ++m)
    for (int k = 0; k < K; ++k) {
      const double a = sh.alpha * dy[size_t(m) * K + k];
      for (int n = 0; n < N; ++n) prod[size_t(m) * N + n] += a * w2[size_t(k) * N + n];
    }
  Vec dpre_ref(prod.size(), 0.0);
  cpu::gelu_bwd(dpre_ref.data(), prod.data(), pre_gpu.data(), int64_t(prod.size()));
  const Vec dbias0 = randn(rng, N);
  Vec dbias_ref = dbias0;
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) dbias_ref[size_t(n)] += dpre_ref[size_t(m) * N + n];
  auto dbias = upload_f32(dbias0);
  cuda::DeviceBuffer<float> scratch{size_t(kernels::gelu_gemm_scratch_floats(M, N))};
  cuda::DeviceBuffer<bf16> dpre(size_t(M) * N);
  kernels::gemm_dgelu(dpre.data(), dbias.data(), scratch.data(), ddy.data(), dw2.data(), pre.data(), sh.alpha, M, N, K,
                      stream.get(), kernel);
  stream.synchronize();
  CHECK(rel_diff(download(dpre), dpre_ref) < kTolBf16);
  CHECK(rel_diff(download(dbias), dbias_ref) < kTolBf16);
  // Without a bias gradient: the same output.
  cuda::DeviceBuffer<bf16> dpre2(size_t(M) * N);
  kernels::gemm_dgelu(dpre2.data(), nullptr, nullptr, ddy.data(), dw2.data(), pre.data(), sh.alpha, M, N, K,
                      stream.get(), kernel);
  stream.synchronize();
  CHECK(rel_diff(download(dpre2), dpre_ref) < kTolBf16);
}

TEST_CASE("gelu GEMMs: shapes they do not take are refused", "[gpu][gemm][gelu_gemm]") {
  CHECK_FALSE(kernels::gelu_gemm_supported(64, 100, 64));  // N not a multiple of 128
  CHECK_FALSE(kernels::gelu_gemm_supported(64, 128, 96));  // K not a multiple of 64
  CHECK_FALSE(kernels::gelu_gemm_supported(0, 128, 64));
  cuda::DeviceBuffer<bf16> buf(size_t(64) * 128);
  CHECK_THROWS_AS(kernels::gemm_bias_gelu_aux(buf.data(), buf.data(), buf.data(), buf.data(), nullptr, 64, 100, 64,
                                              nullptr),
                  std::invalid_argument);
}
