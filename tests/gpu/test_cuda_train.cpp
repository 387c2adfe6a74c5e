// Training on both backends: 20 AdamW steps of the same small GPT from the same fp32 init on the
// same batches, CpuGpt<float> + pg::AdamW on the CPU, CudaGpt + kernels::adamw_update (fp32
// master weights, bf16 working copy) on the GPU. The task is learnable (target = next token of a
// fixed permutation), so the loss falls far; the two loss curves must agree to bf16 tolerance,
// 3e-2 relative at every step (bf16 activations drift a little further each step).
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "config/config.hpp"
#include "gpu_testing.hpp"
#include "kernels/adamw.cuh"
#include "model/cpu_gpt.hpp"
#include "model/cuda_gpt.hpp"
#include "model/gpt.hpp"
#include "optim/adamw.hpp"

using namespace pg;
using namespace pg::test;

TEST_CASE("gpu and cpu training losses agree over 20 AdamW steps", "[gpu][model]") {
  const uint64_t seed = 971;
  CAPTURE(seed);
  const Config cfg = default_config({"model.n_layer=2", "model.n_head=2", "model.d_model=64", "model.d_ff=128",
                                     "model.vocab_size=64", "model.seq_len=32", "optim.lr=3e-3",
                                     "optim.weight_decay=0.1"});
  const ParamTable table = build_gpt_params(cfg);
  std::vector<float> P(size_t(table.total()), 0.f), G(P.size(), 0.f);
  init_gpt_params(cfg, table, P, seed);
  for (auto& x : P) x = float(from_bf16(to_bf16(x)));  // both backends start from the same weights
  const int B = 4, T = cfg.model.seq_len, V = cfg.model.vocab_size, n_step = 20;
  Rng rng(seed);
  std::vector<int32_t> perm(static_cast<size_t>(V));
  for (int i = 0; i < V; ++i) perm[size_t(i)] = i;
  for (int i = V - 1; i > 0; --i) std::swap(perm[size_t(i)], perm[size_t(rng.below(uint64_t(i + 1)))]);

  CpuGpt<float> cpu_model(cfg, table, B);
  AdamW cpu_opt(cfg.optim, table);
  cuda::Stream stream;
  CudaGpt gpu_model(cfg, table, B, stream.get());
  auto master = upload(P);
  cuda::DeviceBuffer<float> grads{P.size()}, m{P.size()}, v{P.size()};
  cuda::DeviceBuffer<bf16> work{P.size()};
  kernels::copy_to_bf16(work.data(), master.data(), int64_t(P.size()), stream.get());
  m.zero(stream.get()), v.zero(stream.get());
  cuda::DeviceBuffer<int32_t> d_x{size_t(B) * T}, d_y{size_t(B) * T};

  std::vector<double> cpu_loss, gpu_loss;
  for (int step = 1; step <= n_step; ++step) {
    std::vector<int32_t> x(size_t(B) * T), y(size_t(B) * T);
    for (size_t i = 0; i < x.size(); ++i) {
      x[i] = int32_t(rng.below(uint64_t(V)));
      y[i] = perm[size_t(x[i])];
    }
    std::fill(G.begin(), G.end(), 0.f);
    cpu_loss.push_back(cpu_model.forward(P.data(), x.data(), y.data(), B, T));
    cpu_model.backward(P.data(), G.data(), 1.0);
    cpu_opt.step(P, G, cfg.optim.lr, step);

    d_x.upload(std::span<const int32_t>(x)), d_y.upload(std::span<const int32_t>(y));
    grads.zero(stream.get());
    gpu_loss.push_back(gpu_model.forward(work.data(), d_x.data(), d_y.data(), B, T));
    gpu_model.backward(work.data(), grads.data(), 1.0);
    kernels::AdamWStep s;
    s.lr = float(cfg.optim.lr), s.beta1 = float(cfg.optim.beta1), s.beta2 = float(cfg.optim.beta2);
    s.eps = float(cfg.optim.eps), s.weight_decay = float(cfg.optim.weight_decay), s.t = step;
    for (const auto& p : table.entries())
      kernels::adamw_update(master.data() + p.offset, work.data() + p.offset, grads.data() + p.offset,
                            m.data() + p.offset, v.data() + p.offset, p.numel, s, p.weight_decay, stream.get());
  }
  stream.synchronize();
  for (int i = 0; i < n_step; ++i) {
    CAPTURE(i, cpu_loss[size_t(i)], gpu_loss[size_t(i)]);
    CHECK(std::abs(gpu_loss[size_t(i)] - cpu_loss[size_t(i)]) / cpu_loss[size_t(i)] < 3e-2);
  }
  CAPTURE(cpu_loss.front(), cpu_loss.back());
  CHECK(cpu_loss.back() < 0.8 * cpu_loss.front());  // it learned: the comparison is not of noise
}
