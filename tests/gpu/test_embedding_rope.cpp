// Embedding (+ learned positions) and RoPE kernels against the float64 CPU reference.
// Tolerances: bf16 outputs kTolBf16; fp32 gradients kTolF32 (sums of a few bf16 values).
#include <catch2/catch.hpp>

#include "backend/cpu/ops.hpp"
#include "gpu_testing.hpp"
#include "kernels/embedding.cuh"
#include "kernels/rope.cuh"

using namespace pg;
using namespace pg::test;

TEST_CASE("gpu embedding forward and backward", "[gpu][embedding]") {
  const uint64_t seed = 931;
  CAPTURE(seed);
  Rng rng(seed);
  const int B = 3, Tn = 17, V = 50;  // few tokens: rows collide in dwte
  // 64: 16-byte packs forward, float4 atomics backward; 36: per channel forward, float4 atomics
  // backward; 30: per channel both ways.
  for (int C : {64, 36, 30}) {
    CAPTURE(C);
    const Vec wte = round_bf16(randn(rng, int64_t(V) * C)), wpe = round_bf16(randn(rng, int64_t(Tn) * C));
    const auto tokens = rand_ints(rng, int64_t(B) * Tn, V);
    Vec ref(size_t(B) * Tn * C);
    cpu::embedding_fwd(ref.data(), tokens.data(), wte.data(), wpe.data(), B, Tn, C);
    auto d_wte = upload_bf16(wte), d_wpe = upload_bf16(wpe);
    auto d_tok = upload(tokens);
    cuda::DeviceBuffer<bf16> d_out(ref.size());
    kernels::embedding_fwd(d_out.data(), d_tok.data(), d_wte.data(), d_wpe.data(), B, Tn, C, nullptr);
    CHECK(rel_diff(download(d_out), ref) < kTolBf16);

    const Vec dout = round_bf16(randn(rng, int64_t(B) * Tn * C));
    AccumGrad dwte(rng, int64_t(V) * C), dwpe(rng, int64_t(Tn) * C);
    auto d_dwte = upload_f32(dwte.start), d_dwpe = upload_f32(dwpe.start);
    cpu::embedding_bwd(dwte.data(), dwpe.data(), dout.data(), tokens.data(), B, Tn, C);
    auto d_dout = upload_bf16(dout);
    kernels::embedding_bwd(d_dwte.data(), d_dwpe.data(), d_dout.data(), d_tok.data(), B, Tn, C, nullptr);
    CHECK(rel_diff(download(d_dwte), dwte.buf) < kTolF32);
    CHECK(rel_diff(download(d_dwpe), dwpe.buf) < kTolF32);
  }
}

TEST_CASE("gpu RoPE forward and backward", "[gpu][rope]") {
  const uint64_t seed = 932;
  CAPTURE(seed);
  Rng rng(seed);
  const int B = 2, Tn = 300, NH = 3;  // t up to 299: large angles for the low frequencies
  for (int hs : {64, 128}) {
    CAPTURE(hs);
    const int64_t n = int64_t(B) * Tn * NH * hs;
    const Vec x = round_bf16(randn(rng, n));
    Vec ref = x;
    cpu::rope_fwd(ref.data(), B, Tn, NH, hs, 10000.0);
    auto d_x = upload_bf16(x);
    kernels::rope_fwd(d_x.data(), B, Tn, NH, hs, 10000.f, nullptr);
    CHECK(rel_diff(download(d_x), ref) < kTolBf16);
    Vec dref = x;
    cpu::rope_bwd(dref.data(), B, Tn, NH, hs, 10000.0);
    auto d_g = upload_bf16(x);
    kernels::rope_bwd(d_g.data(), B, Tn, NH, hs, 10000.f, nullptr);
    CHECK(rel_diff(download(d_g), dref) < kTolBf16);
  }
}
