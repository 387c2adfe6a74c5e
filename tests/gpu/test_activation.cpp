// GELU, ReLU² and soft cap kernels against the float64 CPU reference (kernels/activation.cuh).
// Sizes are not multiples of 8, so both the 16-byte packs and the scalar tail run.
#include <catch2/catch.hpp>

#include "backend/cpu/ops.hpp"
#include "gpu_testing.hpp"
#include "kernels/activation.cuh"

using namespace pg;
using namespace pg::test;

TEST_CASE("gpu activations match the CPU reference in bf16", "[gpu][activation]") {
  const uint64_t seed = 901;
  CAPTURE(seed);
  Rng rng(seed);
  const int64_t n = 8 * 1000 + 5;
  const Vec x = round_bf16(randn(rng, n, 2.0));
  const Vec g = round_bf16(randn(rng, n));
  auto dx = upload_bf16(x), dg = upload_bf16(g);
  cuda::DeviceBuffer<bf16> dy(n);

  SECTION("gelu") {
    Vec ref(n), dref(n, 0.0);
    cpu::gelu_fwd(ref.data(), x.data(), n);
    cpu::gelu_bwd(dref.data(), g.data(), x.data(), n);
    kernels::gelu_fwd(dy.data(), dx.data(), n, nullptr);
    CHECK(rel_diff(download(dy), ref) < kTolBf16);
    kernels::gelu_bwd(dy.data(), dg.data(), dx.data(), n, nullptr);
    CHECK(rel_diff(download(dy), dref) < kTolBf16);
  }
  SECTION("relu2") {
    Vec ref(n), dref(n, 0.0);
    cpu::relu2_fwd(ref.data(), x.data(), n);
    cpu::relu2_bwd(dref.data(), g.data(), x.data(), n);
    kernels::relu2_fwd(dy.data(), dx.data(), n, nullptr);
    CHECK(rel_diff(download(dy), ref) < kTolBf16);
    // in place: dinp aliases dout
    auto dgc = upload_bf16(g);
    kernels::relu2_bwd(dgc.data(), dgc.data(), dx.data(), n, nullptr);
    CHECK(rel_diff(download(dgc), dref) < kTolBf16);
  }
  SECTION("softcap") {
    const double cap = 3.0;
    Vec ref(n), dref(n);
    cpu::softcap_fwd(ref.data(), x.data(), n, cap);
    kernels::softcap_fwd(dy.data(), dx.data(), n, float(cap), nullptr);
    const Vec y = download(dy);
    CHECK(rel_diff(y, ref) < kTolBf16);
    cpu::softcap_bwd(dref.data(), g.data(), y.data(), n, cap);
    kernels::softcap_bwd(dy.data(), dg.data(), dy.data(), n, float(cap), nullptr);
    CHECK(rel_diff(download(dy), dref) < kTolBf16);
  }
}
