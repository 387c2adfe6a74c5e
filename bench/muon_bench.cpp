// One Muon step on the GPU for three parameter sets, the optimizer alone (no model):
//   gpt2       GPT-2 124M's hidden matrices: 12 x (qkv [2304,768], attn.proj [768,768],
//              mlp.fc [3072,768], mlp.proj [768,3072]) = 48 matrices, 85M parameters
//   moe-issue  the MoE set of issue 3: 256 experts x [1280,512] (one 3-D tensor) + 24 x [512,512]
//   moe-gpt2   the Muon tensors of configs/moe-gpt2.json with optim.kind = muon (build_gpt_params)
// Per set, keller5, 5 steps, bf16 (the issue's comparison), median of 20 timed runs after 3
// warm-ups (CUDA events):
//   ns_batched_ms      CudaNewtonSchulz::orthogonalise as CudaMuon runs it: strided-batched GEMMs
//                      for each shape group (the normalisation, cast and 15 GEMM launches per group)
//   ns_blocks_xxt_ms   the same with X X^T by blocks (symmetric = true: 3/4 of its FLOPs where
//                      m % 16 == 0; off by default, see bench/RESULTS.md)
//   ns_per_matrix_ms   the same work launched one matrix at a time
//   step_ms            CudaMuon::step: momentum + Nesterov + gather, NS, decay + update + bf16 copy
// and the NS TFLOP/s (5 x sum over matrices of 4 m^2 n + 2 m^3, m <= n, the full-GEMM count). It also prints each set's
// matrix shapes ("shapes NAME RxC:count,...") for bench/torch_muon.py (scripts/bench_muon.sh).
//   usage: muon_bench [config=configs/moe-gpt2.json]
#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "backend/cuda/device.hpp"
#include "bench/bench_timing.hpp"
#include "config/config.hpp"
#include "core/rng.hpp"
#include "model/gpt.hpp"
#include "optim/cuda_muon.hpp"
#include "optim/cuda_newton_schulz.hpp"
#include "optim/param_split.hpp"

using namespace pg;

namespace {

cuda::DeviceBuffer<float> random_f32(size_t n, uint64_t seed, float scale) {
  Rng rng(seed);
  std::vector<float> h(n);
  for (auto& x : h) x = scale * float(rng.uniform(-1.0, 1.0));
  return cuda::DeviceBuffer<float>{std::span<const float>(h)};
}

ParamTable gpt2_hidden() {
  ParamTable t;
  for (int l = 0; l < 12; ++l) {
    const std::string h = "h." + std::to_string(l) + ".";
    t.add(h + "attn.qkv.weight", {2304, 768}, Role::attn, true);
    t.add(h + "attn.proj.weight", {768, 768}, Role::attn, true);
    t.add(h + "mlp.fc.weight", {3072, 768}, Role::mlp, true);
    t.add(h + "mlp.proj.weight", {768, 3072}, Role::mlp, true);
  }
  for (auto& p : t.entries()) p.muon = true;
  return t;
}

ParamTable moe_issue() {
  ParamTable t;
  t.add("moe.w", {256, 1280, 512}, Role::expert, true);
  for (int i = 0; i < 24; ++i) t.add("attn." + std::to_string(i) + ".weight", {512, 512}, Role::attn, true);
  for (auto& p : t.entries()) p.muon = true;
  return t;
}

ParamTable from_config(const std::string& path) {
  const Config cfg = load_config(path, {"optim.kind=muon"});
  ParamTable t = build_gpt_params(cfg);
  assign_optimizers(t, cfg.optim);
  return t;
}

void bench_set(const std::string& name, const ParamTable& table, cuda::Stream& stream) {
  // The Muon matrices as CudaMuon sees them, and their shapes for the PyTorch side.
  std::vector<MatrixShape> shapes;
  std::vector<int64_t> offsets;
  std::map<std::pair<int, int>, int> counts;
  std::vector<std::pair<int, int>> order;
  int64_t n_params = 0;
  double flops = 0.0;
  for (const auto& p : table.entries()) {
    if (!p.muon) continue;
    const int rows = int(p.rows()), cols = int(p.cols());
    const int64_t per = int64_t(rows) * cols;
    for (int64_t e = 0; e < p.numel / per; ++e) {
      shapes.push_back({rows, cols});
      offsets.push_back(p.offset + e * per);
      const double m = std::min(rows, cols), n = std::max(rows, cols);
      flops += 5.0 * (4.0 * m * m * n + 2.0 * m * m * m);
      if (!counts.count({rows, cols})) order.push_back({rows, cols});
      ++counts[{rows, cols}];
    }
    n_params += p.numel;
  }
  std::string spec;
  for (const auto& rc : order)
    spec += (spec.empty() ? "" : ",") + std::to_string(rc.first) + "x" + std::to_string(rc.second) + ":" +
            std::to_string(counts[rc]);
  std::printf("shapes %s %s\n", name.c_str(), spec.c_str());

  OptimConfig cfg;
  cfg.kind = "muon", cfg.ns_schedule = "keller5", cfg.ns_steps = 5, cfg.ns_precision = "bf16";
  const auto schedule = ns_schedule(cfg.ns_schedule, cfg.ns_steps, 1.01);
  const size_t total = size_t(table.total());
  auto params = random_f32(total, 1, 0.02f);
  float ns_batched = 0.f, ns_blocks = 0.f, ns_single = 0.f, step = 0.f;
  int groups = 0;
  {
    CudaNewtonSchulz ns(shapes, offsets, schedule, NsPrecision::bf16, 1.01, stream.get(), true);
    groups = int(ns.groups().size());
    ns.run(params.data());  // fills the inputs that orthogonalise() reads
    ns_batched = bench::median_ms(stream, [&] { ns.orthogonalise(); });
  }
  {
    CudaNewtonSchulz ns(shapes, offsets, schedule, NsPrecision::bf16, 1.01, stream.get(), true, true);
    ns.run(params.data());
    ns_blocks = bench::median_ms(stream, [&] { ns.orthogonalise(); });
  }
  {
    CudaNewtonSchulz ns(shapes, offsets, schedule, NsPrecision::bf16, 1.01, stream.get(), false);
    ns.run(params.data());
    ns_single = bench::median_ms(stream, [&] { ns.orthogonalise(); });
  }
  {
    auto grads = random_f32(total, 2, 1.f);
    cuda::DeviceBuffer<kernels::bf16> params_bf16(total);
    CudaMuon muon(cfg, table, stream.get());
    int64_t t = 0;
    step = bench::median_ms(stream, [&] { muon.step(params.data(), params_bf16.data(), grads.data(), 1.f, 1.0, ++t); });
  }
  std::printf("ours set=%s matrices=%zu groups=%d params=%lld ns_batched_ms=%.3f ns_blocks_xxt_ms=%.3f "
              "ns_per_matrix_ms=%.3f step_ms=%.3f ns_tflops=%.1f\n",
              name.c_str(), shapes.size(), groups, (long long)n_params, double(ns_batched), double(ns_blocks),
              double(ns_single), double(step), flops / (double(ns_batched) * 1e-3) / 1e12);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  if (cuda::device_count() == 0) {
    std::printf("muon_bench: skipped: no CUDA device\n");
    return 0;
  }
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("muon_bench on %s (keller5, 5 steps, bf16)\n", prop.name);
  const std::string config = argc > 1 ? argv[1] : "configs/moe-gpt2.json";
  cuda::Stream stream;
  try {
    bench_set("gpt2", gpt2_hidden(), stream);
    bench_set("moe-issue", moe_issue(), stream);
    bench_set("moe-gpt2", from_config(config), stream);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "muon_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
