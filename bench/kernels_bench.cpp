// Benchmarks of the cuBLASLt GEMM layer, the fused classifier and the norm backward on GPT-2 124M
// shapes (B·T = 8192 rows per micro-batch of 8 × 1024, C = 768, vocab padded to 50304), plus the
// 8192³ GEMM as the bf16 peak reference. Prints one line per case: median time over 20 runs
// after 3 warm-up runs, TFLOP/s for GEMMs, GB/s for the classifier (bytes: the logits read
// twice and written once, the first two-pass kernel's traffic; DRAM now moves two thirds of it) and
// the norm backward (below). Run by scripts/gpu_check.sh; figures go
// to bench/RESULTS.md.
//   usage: kernels_bench [part=all|gemm|classifier|norm|bias|mlp]
// norm: kernels::norm_bwd with the arguments of gpt_step_bench 64's step (CudaGpt::backward):
// N = 64 × 1024 rows of C = 768, LayerNorm, the bf16 parameter copy as gain; the blocks' norms
// accumulate into the residual gradient with dgain, dbias and dsum (the joined linear layer's
// bias), the final norm writes it with the same sums; and the QK-norm shape (RMS without gain
// over 12 heads of 64, in place, no sums). GB/s counts the [N, C] bf16 tensors read (x, dout,
// and dinp when accumulating) and written (dinp), plus mean and rstd.
// bias: the bias gradients of GPT-2's backward at B = 64 (65536 rows): cuBLASLt's epilogues
// (BGRADB on the dW GEMM, DGELU_BGRAD on the proj dX GEMM) against the same GEMMs without them
// plus kernels::bias_bwd, with bias_bwd's bandwidth alone.
// mlp: the MLP's GELU GEMMs at the same B: cuBLASLt's epilogues against plain GEMMs of the shape
// and against kernels/gelu_gemm.cuh (mlp_gemms below), on single CTAs and on clusters of two.
#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "backend/cuda/device.hpp"
#include "bench/bench_timing.hpp"
#include "backend/cuda/gemm.hpp"
#include "core/rng.hpp"
#include "kernels/adamw.cuh"
#include "kernels/bias.cuh"
#include "kernels/classifier.cuh"
#include "kernels/gelu_gemm.cuh"
#include "kernels/norm.cuh"

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

cuda::DeviceBuffer<float> random_f32(size_t n, uint64_t seed, float lo, float hi) {
  Rng rng(seed);
  std::vector<float> h(n);
  for (auto& x : h) x = float(rng.uniform(lo, hi));
  return cuda::DeviceBuffer<float>{std::span<const float>(h)};
}

void bench_norm_bwd(cuda::Stream& stream) {
  struct Case { const char* name; int N, C; bool accumulate, param, gain; kernels::NormKind kind; };
  const Case cases[] = {
      {"block LN (accumulate, dgain dbias dsum)", 65536, 768, true, true, true, kernels::NormKind::LayerNorm},
      {"final LN (dgain dbias dsum)", 65536, 768, false, true, true, kernels::NormKind::LayerNorm},
      {"QK-norm (RMS, no gain, in place)", 65536 * 12, 64, false, false, false, kernels::NormKind::RMSNorm},
  };
  for (const Case& k : cases) {
    const size_t n = size_t(k.N) * k.C;
    auto x = random_bf16(n, 5, 2.f, stream);
    auto dout = random_bf16(n, 6, 1.f, stream);
    auto dinp = random_bf16(n, 7, 1.f, stream);
    auto gain = random_bf16(size_t(k.C), 8, 1.f, stream);
    auto mean = random_f32(size_t(k.N), 9, -0.1f, 0.1f);
    auto rstd = random_f32(size_t(k.N), 10, 0.5f, 2.f);
    cuda::DeviceBuffer<float> dgain(size_t(k.C)), dbias(size_t(k.C)), dsum(size_t(k.C));
    cuda::DeviceBuffer<float> scratch(size_t(kernels::norm_bwd_scratch_floats(k.C)));
    const bool ln = k.kind == kernels::NormKind::LayerNorm;
    // In place (dinp = dout) for QK-norm, as the step calls it.
    bf16* dy = k.param ? dout.data() : dinp.data();
    // The group kernel beside the default warp ring where that takes the rows (kernels::NormBwdKernel).
    for (const auto which : {kernels::NormBwdKernel::Group, kernels::NormBwdKernel::WarpRing}) {
      if (which == kernels::NormBwdKernel::WarpRing && k.C < 256) continue;
      const float ms = bench::median_ms(stream, [&] {
        kernels::norm_bwd(dinp.data(), k.accumulate, k.param ? dgain.data() : nullptr,
                          k.param ? dbias.data() : nullptr, k.param ? dsum.data() : nullptr,
                          k.param ? scratch.data() : nullptr, dy, x.data(), k.gain ? gain.data() : nullptr,
                          ln ? mean.data() : nullptr, rstd.data(), k.N, k.C, k.kind, stream.get(), which);
      });
      const double bytes =
          double(n) * sizeof(bf16) * (k.accumulate ? 4 : 3) + double(k.N) * sizeof(float) * (ln ? 2 : 1);
      std::printf("norm_bwd %-40s %-9s N=%d C=%d %8.3f ms %7.1f GB/s\n", k.name,
                  which == kernels::NormBwdKernel::Group ? "group" : "warp_ring", k.N, k.C, ms,
                  bytes / (ms * 1e-3) / 1e9);
    }
  }
}

// A large random buffer: random_bf16's first 16M values repeated (generating hundreds of millions
// on the host would take longer than the benchmark).
cuda::DeviceBuffer<bf16> random_bf16_tiled(size_t n, uint64_t seed, float scale, cuda::Stream& stream) {
  const size_t tile = std::min(n, size_t(1) << 24);
  auto t = random_bf16(tile, seed, scale, stream);
  cuda::DeviceBuffer<bf16> b(n);
  for (size_t o = 0; o < n; o += tile)
    CUDA_CHECK(cudaMemcpyAsync(b.data() + o, t.data(), std::min(tile, n - o) * sizeof(bf16), cudaMemcpyDeviceToDevice,
                               stream.get()));
  stream.synchronize();
  return b;
}

// The fc and q/k/v bias gradients of one GPT-2 124M backward at B = 64 (N = 65536 rows), each
// way the step could compute them.
void bias_gradients(cuda::Stream& stream, cuda::GemmRunner& runner) {
  const int N = 65536, C = 768, F = 4 * C;
  auto dres = random_bf16_tiled(size_t(N) * C, 5, 1.f, stream), ln = random_bf16_tiled(size_t(N) * C, 6, 1.f, stream);
  auto wproj = random_bf16(size_t(C) * F, 7, 0.05f, stream), pre = random_bf16_tiled(size_t(N) * F, 8, 2.f, stream);
  auto dqkv = random_bf16_tiled(size_t(N) * 3 * C, 9, 1.f, stream);
  cuda::DeviceBuffer<bf16> dact(size_t(N) * F);
  cuda::DeviceBuffer<float> dw{size_t(F) * C}, db{size_t(F)}, part{size_t(F)};
  cuda::DeviceBuffer<float> scratch(size_t(std::max(kernels::bias_bwd_scratch_floats(F),
                                                     kernels::bias_bwd_scratch_floats(3 * C))));
  auto report = [](const char* what, float ms, double bytes) {
    if (bytes > 0) std::printf("bias %-44s %8.3f ms %7.1f GB/s\n", what, ms, bytes / (ms * 1e-3) / 1e9);
    else std::printf("bias %-44s %8.3f ms\n", what, ms);
  };
  const cudaStream_t s = stream.get();
  // proj dX: dact[N,F] = (dres[N,C] · Wproj[C,F]) ∘ gelu'(pre), the fc bias's gradient Σ_rows dact.
  cuda::GemmArgs d;
  d.M = N, d.N = F, d.K = C, d.A = dres.data(), d.B = wproj.data(), d.C = dact.data();
  d.out_type = cuda::OutType::BF16, d.epilogue = cuda::Epilogue::DGelu, d.aux = pre.data();
  report("proj dX DGELU", bench::median_ms(stream, [&] { runner.gemm(d); }), 0);
  report("proj dX DGELU + bias_bwd(dact)", bench::median_ms(stream, [&] {
           runner.gemm(d);
           kernels::bias_bwd(db.data(), scratch.data(), dact.data(), N, F, s);
         }), 0);
  cuda::GemmArgs e = d;
  e.epilogue = cuda::Epilogue::DGeluBiasGrad, e.bias_grad = part.data();
  if (runner.supports(e))
    report("proj dX DGELU_BGRAD + bias_accumulate", bench::median_ms(stream, [&] {
             runner.gemm(e);
             kernels::bias_accumulate(db.data(), part.data(), F, s);
           }), 0);
  else std::printf("bias proj dX DGELU_BGRAD (fp32 bias gradient): not supported by this cuBLASLt\n");
  // bias_bwd alone over [N, OC]: the bytes of dout read once.
  for (int OC : {F, 3 * C, C}) {
    const bf16* x = OC == F ? dact.data() : dqkv.data();
    char what[64];
    std::snprintf(what, sizeof what, "bias_bwd [%d, %d]", N, OC);
    report(what, bench::median_ms(stream, [&] { kernels::bias_bwd(db.data(), scratch.data(), x, N, OC, s); }),
           2.0 * double(N) * OC);
  }
  // dW[OC,C] += dout^T · ln, with the bias gradient from BGRADB or from bias_bwd.
  for (int OC : {F, 3 * C}) {
    const bf16* dout = OC == F ? dact.data() : dqkv.data();
    cuda::GemmArgs g;
    g.M = OC, g.N = C, g.K = N, g.A = dout, g.trans_a = true, g.B = ln.data(), g.C = dw.data(), g.beta = 1.f;
    char what[64];
    std::snprintf(what, sizeof what, "dW [N,%d]^T x [N,C]", OC);
    report(what, bench::median_ms(stream, [&] { runner.gemm(g); }), 0);
    std::snprintf(what, sizeof what, "dW [N,%d]^T x [N,C] + bias_bwd", OC);
    report(what, bench::median_ms(stream, [&] {
             runner.gemm(g);
             kernels::bias_bwd(db.data(), scratch.data(), dout, N, OC, s);
           }), 0);
    cuda::GemmArgs h = g;
    h.epilogue = cuda::Epilogue::BiasGradA, h.bias_grad = part.data();
    std::snprintf(what, sizeof what, "dW [N,%d]^T x [N,C] BGRADB + bias_accumulate", OC);
    report(what, bench::median_ms(stream, [&] {
             runner.gemm(h);
             kernels::bias_accumulate(db.data(), part.data(), OC, s);
           }), 0);
  }
}

// The MLP's GEMMs with and without their GELU epilogues at GPT-2 124M's B = 64 (65536 rows), and
// the projection's dX both ways its weight can be stored: as the model keeps it ([C, 4C], "nn"
// to cuBLASLt) and transposed ([4C, C], "tn"), each with cuBLASLt's first choice and with the
// fastest of its candidates (autotune).
void mlp_gemms(cuda::Stream& stream) {
  const int N = 65536, C = 768, F = 4 * C;
  auto x = random_bf16_tiled(size_t(N) * C, 11, 1.f, stream), dy = random_bf16_tiled(size_t(N) * C, 12, 1.f, stream);
  auto wfc = random_bf16(size_t(F) * C, 13, 0.05f, stream), wproj = random_bf16(size_t(C) * F, 14, 0.05f, stream);
  auto wproj_t = random_bf16(size_t(F) * C, 15, 0.05f, stream), bias = random_bf16(size_t(F), 16, 0.1f, stream);
  auto pre = random_bf16_tiled(size_t(N) * F, 17, 2.f, stream);
  cuda::DeviceBuffer<bf16> out(size_t(N) * F), aux(size_t(N) * F);
  cuda::DeviceBuffer<float> bgrad{size_t(F)};
  for (int tuned = 0; tuned < 2; ++tuned) {
    cuda::GemmRunner runner(stream.get());
    runner.set_autotune(tuned == 1);
    auto report = [&](const char* what, cuda::GemmArgs g) {
      if (!runner.supports(g)) {
        std::printf("mlp %-40s %s: not supported\n", what, tuned ? "tuned" : "heuristic");
        return;
      }
      const float ms = bench::median_ms(stream, [&] { runner.gemm(g); });
      std::printf("mlp %-40s %-9s %8.3f ms %7.1f TFLOP/s\n", what, tuned ? "tuned" : "heuristic", ms,
                  2.0 * N * F * C / (ms * 1e-3) / 1e12);
    };
    cuda::GemmArgs f;  // fc forward: [N, C] x [F, C]^T
    f.M = N, f.N = F, f.K = C, f.A = x.data(), f.B = wfc.data(), f.trans_b = true, f.C = out.data();
    f.out_type = cuda::OutType::BF16, f.bias = bias.data();
    f.epilogue = cuda::Epilogue::Bias;
    report("fc fwd BIAS", f);
    f.epilogue = cuda::Epilogue::BiasGeluAux, f.aux = aux.data();
    report("fc fwd GELU_AUX_BIAS", f);
    cuda::GemmArgs d;  // proj dX: [N, C] x [C, F] ("nn"), or x [F, C]^T ("tn")
    d.M = N, d.N = F, d.K = C, d.A = dy.data(), d.B = wproj.data(), d.C = out.data();
    d.out_type = cuda::OutType::BF16;
    report("proj dX nn", d);
    d.epilogue = cuda::Epilogue::DGelu, d.aux = pre.data();
    report("proj dX nn DGELU", d);
    d.epilogue = cuda::Epilogue::DGeluBiasGrad, d.bias_grad = bgrad.data();
    report("proj dX nn DGELU_BGRAD", d);
    d.B = wproj_t.data(), d.trans_b = true, d.epilogue = cuda::Epilogue::None, d.aux = nullptr, d.bias_grad = nullptr;
    report("proj dX tn", d);
    d.epilogue = cuda::Epilogue::DGelu, d.aux = pre.data();
    report("proj dX tn DGELU", d);
    d.epilogue = cuda::Epilogue::DGeluBiasGrad, d.bias_grad = bgrad.data();
    report("proj dX tn DGELU_BGRAD", d);
  }
  // Beside them, ours (kernels/gelu_gemm.cuh), and what the step ran before them for the
  // backward: cuBLASLt's DGELU, then bias_bwd over its output.
  if (!kernels::gelu_gemm_supported(N, F, C)) return;
  const cudaStream_t s = stream.get();
  auto ours = [&](const char* what, const std::function<void()>& fn) {
    const float ms = bench::median_ms(stream, fn);
    std::printf("mlp %-40s %-9s %8.3f ms %7.1f TFLOP/s\n", what, "ours", ms, 2.0 * N * F * C / (ms * 1e-3) / 1e12);
  };
  cuda::DeviceBuffer<float> scratch{size_t(std::max(kernels::gelu_gemm_scratch_floats(N, F),
                                                    kernels::bias_bwd_scratch_floats(F)))};
  std::printf("mlp clusters of two at once (Pair's grid): forward %d, gradient %d, of %d SMs\n",
              kernels::gelu_gemm_pair_clusters(false), kernels::gelu_gemm_pair_clusters(true), cuda::sm_count());
  for (const auto kernel : {kernels::GeluGemmKernel::Solo, kernels::GeluGemmKernel::Pair}) {
    const char* how = kernel == kernels::GeluGemmKernel::Pair ? ", pair" : "";
    char what[64];
    std::snprintf(what, sizeof what, "fc fwd bias+GELU+aux%s", how);
    ours(what, [&] {
      kernels::gemm_bias_gelu_aux(out.data(), aux.data(), x.data(), wfc.data(), bias.data(), N, F, C, s, kernel);
    });
    std::snprintf(what, sizeof what, "proj dX nn DGELU%s", how);
    ours(what, [&] {
      kernels::gemm_dgelu(out.data(), nullptr, nullptr, dy.data(), wproj.data(), pre.data(), 1.f, N, F, C, s, kernel);
    });
    std::snprintf(what, sizeof what, "proj dX nn DGELU + bias sums%s", how);
    ours(what, [&] {
      kernels::gemm_dgelu(out.data(), bgrad.data(), scratch.data(), dy.data(), wproj.data(), pre.data(), 1.f, N, F, C, s,
                          kernel);
    });
  }
  cuda::GemmRunner runner(s);
  cuda::GemmArgs d;
  d.M = N, d.N = F, d.K = C, d.A = dy.data(), d.B = wproj.data(), d.C = out.data();
  d.out_type = cuda::OutType::BF16, d.epilogue = cuda::Epilogue::DGelu, d.aux = pre.data();
  ours("(cuBLASLt DGELU + bias_bwd)", [&] {
    runner.gemm(d);
    kernels::bias_bwd(bgrad.data(), scratch.data(), out.data(), N, F, s);
  });
}

}  // namespace

int main(int argc, char** argv) {
  if (cuda::device_count() == 0) {
    std::printf("kernels_bench: skipped: no CUDA device\n");
    return 0;
  }
  const std::string part = argc > 1 ? argv[1] : "all";
  if (part != "all" && part != "gemm" && part != "classifier" && part != "norm" && part != "bias" && part != "mlp") {
    std::fprintf(stderr, "kernels_bench: part: expected all, gemm, classifier, norm, bias or mlp, got %s\n", part.c_str());
    return 2;
  }
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("kernels_bench on %s\n", prop.name);
  cuda::Stream stream;
  if (part == "norm") {
    bench_norm_bwd(stream);
    return 0;
  }
  if (part == "mlp") {
    mlp_gemms(stream);
    return 0;
  }
  cuda::GemmRunner runner(stream.get());
  if (part == "bias") {
    bias_gradients(stream, runner);
    return 0;
  }

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
  if (part == "all" || part == "gemm") {
    for (const G& g : cases) {
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
  }

  if (part == "all" || part == "classifier") {
    // Fused classifier over the logits of one micro-batch, with the automatic split (0) and, without
    // the soft cap, each split of a row over a cluster. Each timed run starts from fresh logits (the
    // kernel overwrites them with dlogits), copied in outside the timing.
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
  }
  if (part == "all") bench_norm_bwd(stream);
  if (part == "all") bias_gradients(stream, runner);
  if (part == "all") mlp_gemms(stream);
  return 0;
}
