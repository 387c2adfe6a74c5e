// Benchmarks of the cuBLASLt GEMM layer and the fused classifier on GPT-2 124M shapes
// (B·T = 8192 rows per micro-batch of 8 × 1024, C = 768, vocab padded to 50304), plus the
// 8192³ GEMM as the bf16 peak reference. Prints one line per case: median time over 20 runs
// after 3 warm-up runs, TFLOP/s for GEMMs, GB/s for the classifier (bytes: the logits read
// twice and written once, the first two-pass kernel's traffic; DRAM now moves two thirds of it).
// Run by scripts/gpu_check.sh; figures go to bench/RESULTS.md.
//   usage: kernels_bench [which=all|gemm|classifier]
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "backend/cuda/device.hpp"
#include "bench/bench_timing.hpp"
#include "backend/cuda/gemm.hpp"
#include "core/rng.hpp"
#include "kernels/adamw.cuh"
#include "kernels/classifier.cuh"

using namespace pg;
using kernels::bf16;

namespace {

// Device buffer of n random values, filled on the device from a random fp32 upload.
cuda::DeviceBuffer<bf16> random_bf16(size_t n, uint64_t seed, float scale, cuda::Stream& stream) {
  Rng rng(seed);
  std::vector<float> h(n);
  for (auto& x : h) x = scale * float(rng.uniform(-1.0, 1.0));
  cuda::DeviceBuffer<float> f{std::span<const float>(h)};
  cuda::DeviceBuffer<bf16> b(n);
  kernels::copy_to_bf16(b.data(), f.data(), int64_t(n), stream.get());
  stream.synchronize();
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string which = argc > 1 ? argv[1] : "all";
  if (which != "all" && which != "gemm" && which != "classifier") {
    std::fprintf(stderr, "kernels_bench: which: expected all, gemm or classifier, got %s\n", which.c_str());
    return 2;
  }
  if (cuda::device_count() == 0) {
    std::printf("kernels_bench: skipped: no CUDA device\n");
    return 0;
  }
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("kernels_bench on %s\n", prop.name);
  cuda::Stream stream;
  cuda::GemmRunner runner(stream.get());

  struct G { const char* name; int M, N, K; bool ta, tb; cuda::OutType out; };
  const int BT = 8192, C = 768, V = 50304;
  const G cases[] = {
      {"square 8192^3 (bf16 out)", 8192, 8192, 8192, false, true, cuda::OutType::BF16},
      {"qkv fwd   [BT,C]x[3C,C]^T", BT, 3 * C, C, false, true, cuda::OutType::BF16},
      {"fc fwd    [BT,C]x[4C,C]^T", BT, 4 * C, C, false, true, cuda::OutType::BF16},
      {"proj fwd  [BT,4C]x[C,4C]^T", BT, C, 4 * C, false, true, cuda::OutType::BF16},
      {"fc dW     [BT,4C]^T x [BT,C] fp32", 4 * C, C, BT, true, false, cuda::OutType::F32},
      {"head fwd  [BT,C]x[V,C]^T", BT, V, C, false, true, cuda::OutType::BF16},
      {"head dX   [BT,V]x[V,C]", BT, C, V, false, false, cuda::OutType::BF16},
      {"head dW   [BT,V]^T x [BT,C] fp32", V, C, BT, true, false, cuda::OutType::F32},
  };
  for (const G& g : cases) {
    if (which == "classifier") break;
    auto A = random_bf16(size_t(g.M) * g.K, 1, 1.f, stream);
    auto B = random_bf16(size_t(g.K) * g.N, 2, 1.f, stream);
    cuda::DeviceBuffer<float> Cf(g.out == cuda::OutType::F32 ? size_t(g.M) * g.N : 0);
    cuda::DeviceBuffer<bf16> Cb(g.out == cuda::OutType::BF16 ? size_t(g.M) * g.N : 0);
    cuda::GemmArgs a;
    a.M = g.M, a.N = g.N, a.K = g.K, a.A = A.data(), a.trans_a = g.ta, a.B = B.data(), a.trans_b = g.tb;
    a.out_type = g.out;
    a.C = g.out == cuda::OutType::F32 ? static_cast<void*>(Cf.data()) : static_cast<void*>(Cb.data());
    const float ms = bench::median_ms(stream, [&] { runner.gemm(a); });
    std::printf("gemm %-36s %8.3f ms %7.1f TFLOP/s\n", g.name, ms, 2.0 * g.M * g.N * g.K / (ms * 1e-3) / 1e12);
  }

  // Fused classifier over the logits of one micro-batch, with the automatic split (0) and, without
  // the soft cap, each split of a row over a cluster. Each timed run starts from fresh logits (the
  // kernel overwrites them with dlogits), copied in outside the timing.
  if (which == "gemm") return 0;
  auto logits0 = random_bf16(size_t(BT) * V, 3, 8.f, stream);
  cuda::DeviceBuffer<bf16> logits(size_t(BT) * V);
  std::vector<int32_t> t(BT);
  Rng rng(4);
  for (auto& x : t) x = int32_t(rng.below(50257));
  cuda::DeviceBuffer<int32_t> targets{std::span<const int32_t>(t)};
  cuda::DeviceBuffer<float> losses(BT);
  struct K { float cap; int split; };
  for (const K& k : {K{0.f, 0}, K{30.f, 0}, K{0.f, 1}, K{0.f, 2}, K{0.f, 4}, K{0.f, 8}}) {
    std::vector<float> ms;
    cuda::Event start, stop;
    for (int i = 0; i < 23; ++i) {
      CUDA_CHECK(cudaMemcpyAsync(logits.data(), logits0.data(), logits.bytes(), cudaMemcpyDeviceToDevice, stream.get()));
      start.record(stream.get());
      kernels::fused_classifier(logits.data(), losses.data(), nullptr, targets.data(), BT, 50257, V, 1.f / BT, k.cap,
                                true, stream.get(), k.split);
      stop.record(stream.get());
      stop.synchronize();
      if (i >= 3) ms.push_back(stop.elapsed_ms_since(start));
    }
    std::sort(ms.begin(), ms.end());
    const double bytes = 3.0 * double(BT) * V * sizeof(bf16);
    std::printf("fused classifier BT=%d V=%d cap=%-4g split=%d %8.3f ms %7.1f GB/s\n", BT, V, double(k.cap), k.split,
                ms[ms.size() / 2], bytes / (ms[ms.size() / 2] * 1e-3) / 1e9);
  }
  // The bandwidth ceiling beside it: a device copy of the same logits (one read, one write).
  const float copy_ms = bench::median_ms(stream, [&] {
    CUDA_CHECK(cudaMemcpyAsync(logits.data(), logits0.data(), logits.bytes(), cudaMemcpyDeviceToDevice, stream.get()));
  });
  std::printf("device copy of the logits %8.3f ms %7.1f GB/s (one read, one write)\n", copy_ms,
              2.0 * double(logits.bytes()) / (copy_ms * 1e-3) / 1e9);
  return 0;
}
