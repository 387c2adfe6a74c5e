// Times one MoE MLP block on the GPU (model/cuda_moe.hpp) against the dense MLP of the same
// active width, forward + backward, on moe-gpt2.json's shapes by default.
//   usage: moe_bench [tokens n_expert top_k d_ff_expert capacity_factor]
//          (default: 8192 64 2 1536 1.25; d_model 768, GELU, biases; dense d_ff = top_k·d_ff_expert)
// Median over 20 timed repetitions after 3 warm-ups (CUDA events). Parameters and inputs random
// (|x| <= 0.02 for weights, <= 1 for activations; never zeros). Also times the routing and
// dispatch/combine kernels alone (router softmax/top-k, plan, router losses, gather, combine and
// their backwards: everything of the block but the GEMMs and activations), for their share.
// Also times the block with its biases and GELU as separate passes rather than in the expert
// GEMMs' epilogues. The MoE block's own timing is the profiled range (cudaProfilerStart/Stop), for
// `nsys profile --capture-range=cudaProfilerApi`.
// Prints: "dense N C F ms", "moe N C E k F cf ms ratio", "moe_unfused_epilogues ms ratio",
// "moe_dispatch ms share".
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <cuda_profiler_api.h>

#include "bench/bench_timing.hpp"
#include "backend/cuda/check.hpp"
#include "backend/cuda/device.hpp"
#include "backend/cuda/gemm.hpp"
#include "config/config.hpp"
#include "kernels/activation.cuh"
#include "kernels/bias.cuh"
#include "kernels/moe.cuh"
#include "model/cuda_moe.hpp"
#include "model/gpt.hpp"

namespace {

using pg::cuda::DeviceBuffer;
using pg::kernels::bf16;

// Host-side hash fill in [-scale, scale), never exactly zero (scale 0: zeros, for gradients).
float hashed(size_t i, uint32_t seed) {
  uint32_t h = uint32_t(i) * 2654435761u ^ seed;
  h ^= h >> 16;
  h *= 0x7feb352du;
  h ^= h >> 15;
  h *= 0x846ca68bu;
  h ^= h >> 16;
  const float u = float(h) * (2.f / 4294967296.f) - 1.f;
  return u == 0.f ? 0.5f : u;
}
template <typename T>
void fill(DeviceBuffer<T>& b, uint32_t seed, float scale) {
  std::vector<T> h(b.size());
  for (size_t i = 0; i < h.size(); ++i) h[i] = T(scale * hashed(i, seed));
  b.upload(h);
}

}  // namespace

int main(int argc, char** argv) {
  const int N = argc > 1 ? std::atoi(argv[1]) : 8192;
  const int E = argc > 2 ? std::atoi(argv[2]) : 64;
  const int K = argc > 3 ? std::atoi(argv[3]) : 2;
  const int F = argc > 4 ? std::atoi(argv[4]) : 1536;
  const double cf = argc > 5 ? std::atof(argv[5]) : 1.25;
  const int C = 768, Fd = K * F;
  if (pg::cuda::device_count() == 0) {
    std::printf("no CUDA device\n");
    return 0;
  }
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device %s\n", prop.name);

  const pg::Config cfg = pg::default_config(
      {"model.variant=moe", "model.n_layer=1", "model.n_head=12", "model.d_model=768", "model.vocab_size=64",
       "model.seq_len=1024", "model.activation=gelu", "model.bias=true", "moe.n_expert=" + std::to_string(E),
       "moe.top_k=" + std::to_string(K), "moe.d_ff_expert=" + std::to_string(F),
       "moe.capacity_factor=" + std::to_string(cf), "moe.every=1"});
  const pg::ParamTable table = pg::build_gpt_params(cfg);
  pg::cuda::Stream stream;
  const cudaStream_t s = stream.get();
  pg::cuda::GemmRunner gemm(s);

  DeviceBuffer<bf16> P(size_t(table.total())), x(size_t(N) * C), y(size_t(N) * C), dy(size_t(N) * C),
      dx(size_t(N) * C);
  DeviceBuffer<float> G(size_t(table.total()));
  fill(P, 1, 0.02f), fill(x, 2, 1.f), fill(dy, 3, 1.f), fill(G, 4, 0.f);
  CUDA_CHECK(cudaDeviceSynchronize());

  // Dense MLP of width top_k·d_ff_expert: the GEMM sequence of CudaGpt's MLP (GELU and biases in the
  // epilogues, bias gradients from the dW GEMMs).
  DeviceBuffer<bf16> W1(size_t(Fd) * C), b1(Fd), W2(size_t(C) * Fd), b2(C), fc(size_t(N) * Fd), act(size_t(N) * Fd),
      dact(size_t(N) * Fd);
  DeviceBuffer<float> dW1(size_t(Fd) * C), dW2(size_t(C) * Fd);
  fill(W1, 5, 0.02f), fill(b1, 6, 0.02f), fill(W2, 7, 0.02f), fill(b2, 8, 0.02f), fill(dW1, 9, 0.f), fill(dW2, 10, 0.f);
  DeviceBuffer<float> db1(Fd), db2(C), bgrad(Fd);
  fill(db1, 13, 0.f), fill(db2, 14, 0.f);
  auto dense = [&] {
    pg::cuda::GemmArgs g;  // act = gelu(x W1^T + b1), the pre-activation kept in fc
    g.M = N, g.N = Fd, g.K = C, g.A = x.data(), g.B = W1.data(), g.trans_b = true, g.C = act.data();
    g.out_type = pg::cuda::OutType::BF16, g.epilogue = pg::cuda::Epilogue::BiasGeluAux, g.bias = b1.data();
    g.aux = fc.data();
    gemm.gemm(g);
    g = {};
    g.M = N, g.N = C, g.K = Fd, g.A = act.data(), g.B = W2.data(), g.trans_b = true, g.C = y.data();
    g.out_type = pg::cuda::OutType::BF16, g.epilogue = pg::cuda::Epilogue::Bias, g.bias = b2.data();
    gemm.gemm(g);
    g = {};  // dact = (dy · W2) ∘ gelu'(fc)
    g.M = N, g.N = Fd, g.K = C, g.A = dy.data(), g.B = W2.data(), g.C = dact.data(), g.out_type = pg::cuda::OutType::BF16;
    g.epilogue = pg::cuda::Epilogue::DGelu, g.aux = fc.data();
    gemm.gemm(g);
    g = {};
    g.M = C, g.N = Fd, g.K = N, g.A = dy.data(), g.trans_a = true, g.B = act.data(), g.C = dW2.data(), g.beta = 1.f;
    g.epilogue = pg::cuda::Epilogue::BiasGradA, g.bias_grad = bgrad.data();
    gemm.gemm(g);
    pg::kernels::bias_accumulate(db2.data(), bgrad.data(), C, s);
    g = {};
    g.M = N, g.N = C, g.K = Fd, g.A = dact.data(), g.B = W1.data(), g.C = dx.data(), g.out_type = pg::cuda::OutType::BF16;
    gemm.gemm(g);
    g = {};
    g.M = Fd, g.N = C, g.K = N, g.A = dact.data(), g.trans_a = true, g.B = x.data(), g.C = dW1.data(), g.beta = 1.f;
    g.epilogue = pg::cuda::Epilogue::BiasGradA, g.bias_grad = bgrad.data();
    gemm.gemm(g);
    pg::kernels::bias_accumulate(db1.data(), bgrad.data(), Fd, s);
  };
  const float dense_ms = pg::bench::median_ms(stream, dense);
  std::printf("dense N=%d C=%d F=%d fwdbwd_ms=%.3f\n", N, C, Fd, dense_ms);

  pg::CudaMoe block(cfg, table, 0, N, gemm, s);
  DeviceBuffer<std::byte> acts(pg::CudaMoe::activation_bytes(cfg, N)), scratch(pg::CudaMoe::scratch_bytes(cfg, N));
  block.bind(acts.data(), scratch.data());
  auto moe = [&] {
    block.forward(P.data(), x.data(), y.data(), N);
    block.backward(P.data(), G.data(), dy.data(), dx.data(), 1.0);
  };
  // The profiled range (nsys --capture-range=cudaProfilerApi): the MoE block alone, 23 times.
  CUDA_CHECK(cudaProfilerStart());
  const float moe_ms = pg::bench::median_ms(stream, moe);
  CUDA_CHECK(cudaProfilerStop());
  std::printf("moe N=%d C=%d E=%d k=%d F=%d cf=%.2f cap=%d fwdbwd_ms=%.3f ratio_to_dense=%.2f epilogues_fused=%d\n", N,
              C, E, K, F, cf, block.capacity(N), moe_ms, moe_ms / dense_ms, int(block.epilogues_fused()));
  // The same block with the biases and the GELU as separate passes instead of GEMM epilogues.
  block.set_fused_epilogues(false);
  const float unfused_ms = pg::bench::median_ms(stream, moe);
  block.set_fused_epilogues(true);
  std::printf("moe_unfused_epilogues fwdbwd_ms=%.3f fused/unfused=%.3f\n", unfused_ms, moe_ms / unfused_ms);

  // The routing and dispatch/combine kernels alone, on buffers of the block's shapes.
  const int cap = block.capacity(N);
  const int64_t rows = int64_t(E) * cap;
  DeviceBuffer<float> logits(size_t(N) * E), probs(size_t(N) * E), lse(N), gates(size_t(N) * K), dgates(size_t(N) * K);
  DeviceBuffer<int32_t> sel(size_t(N) * K), slot(size_t(N) * K), row_src(static_cast<size_t>(rows)), counts(E),
      plan(size_t(pg::kernels::moe_plan_scratch_ints(N, K, E)));
  DeviceBuffer<double> losses(2), colsum(E);
  DeviceBuffer<bf16> xe(size_t(rows) * C), eo(size_t(rows) * C), deo(size_t(rows) * C), dlogits(size_t(N) * E);
  fill(logits, 11, 3.f), fill(eo, 12, 1.f);
  auto dispatch = [&] {
    pg::kernels::moe_router_fwd(probs.data(), lse.data(), sel.data(), gates.data(), logits.data(), nullptr, N, E, K, s);
    pg::kernels::moe_dispatch_plan(slot.data(), row_src.data(), counts.data(), plan.data(), sel.data(), N, E, K, cap, s);
    pg::kernels::moe_router_loss_fwd(losses.data(), colsum.data(), probs.data(), lse.data(), counts.data(), N, E, K, s);
    pg::kernels::moe_gather(xe.data(), x.data(), row_src.data(), E, cap, K, C, s);
    pg::kernels::moe_combine_fwd(y.data(), eo.data(), gates.data(), slot.data(), N, K, C, s);
    pg::kernels::moe_combine_bwd(deo.data(), dgates.data(), dy.data(), eo.data(), gates.data(), row_src.data(), N, E,
                                 cap, K, C, s);
    pg::kernels::moe_scatter(dx.data(), false, xe.data(), slot.data(), N, K, C, s);
    pg::kernels::moe_router_bwd(nullptr, dlogits.data(), dgates.data(), gates.data(), sel.data(), probs.data(),
                                lse.data(), counts.data(), N, E, K, 0.01, 0.001, s);
  };
  const float disp_ms = pg::bench::median_ms(stream, dispatch);
  std::printf("moe_dispatch fwdbwd_ms=%.3f share_of_moe=%.3f\n", disp_ms, disp_ms / moe_ms);
  return 0;
}
