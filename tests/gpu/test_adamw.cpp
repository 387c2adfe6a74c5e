// The AdamW update and the global grad norm (kernels/adamw.cuh) against the CPU optimizer
// (optim/adamw.hpp) and global_grad_norm, on a two-tensor table (one decayed, one not).
// Tolerances: fp32 parameters and moments kTolF32 after 3 steps; bf16 copy kTolBf16.
#include <catch2/catch.hpp>

#include "gpu_testing.hpp"
#include "kernels/adamw.cuh"
#include "optim/adamw.hpp"

using namespace pg;
using namespace pg::test;

TEST_CASE("gpu AdamW matches the CPU optimizer over 3 steps", "[gpu][adamw]") {
  const uint64_t seed = 951;
  CAPTURE(seed);
  Rng rng(seed);
  ParamTable table;
  table.add("w", {37, 29}, Role::attn, true);
  table.add("g", {53}, Role::norm, false);
  OptimConfig oc;
  oc.lr = 1e-2, oc.weight_decay = 0.1, oc.beta1 = 0.9, oc.beta2 = 0.95, oc.eps = 1e-8;
  AdamW cpu_opt(oc, table);
  const int64_t total = table.total();
  std::vector<float> params(static_cast<size_t>(total));
  for (auto& p : params) p = float(rng.normal());
  auto d_params = upload(params);
  cuda::DeviceBuffer<float> d_m{size_t(total)}, d_v{size_t(total)}, d_grads{size_t(total)};
  cuda::DeviceBuffer<bf16> d_bf16{size_t(total)};
  d_m.zero(), d_v.zero();
  for (int64_t t = 1; t <= 3; ++t) {
    std::vector<float> grads(static_cast<size_t>(total));
    for (auto& g : grads) g = float(rng.normal());
    d_grads.upload(std::span<const float>(grads));
    cpu_opt.step(params, grads, /*lr_factor=*/1.0, t);
    kernels::AdamWStep s;
    s.lr = float(oc.lr), s.beta1 = float(oc.beta1), s.beta2 = float(oc.beta2), s.eps = float(oc.eps);
    s.weight_decay = float(oc.weight_decay), s.t = t;
    for (const auto& p : table.entries())
      kernels::adamw_update(d_params.data() + p.offset, d_bf16.data() + p.offset, d_grads.data() + p.offset,
                            d_m.data() + p.offset, d_v.data() + p.offset, p.numel, s, p.weight_decay, nullptr);
  }
  const auto gpu_params = d_params.download();
  CHECK(rel_diff(gpu_params, params) < kTolF32);
  // The CPU optimizer's moments, gathered back into the flat layout from its named state.
  std::vector<float> cpu_m(static_cast<size_t>(total), 0.0f), cpu_v(static_cast<size_t>(total), 0.0f);
  for (const auto& st : cpu_opt.state()) {
    const bool is_m = st.name.ends_with(".exp_avg");
    const std::string param = st.name.substr(0, st.name.rfind('.'));
    const int64_t off = table.get(param).offset;
    std::copy(st.data, st.data + st.numel, (is_m ? cpu_m : cpu_v).begin() + off);
  }
  CHECK(rel_diff(d_m.download(), cpu_m) < kTolF32);
  CHECK(rel_diff(d_v.download(), cpu_v) < kTolF32);
  // The bf16 working copy of each tensor (padding between tensors is not written).
  for (const auto& p : table.entries()) {
    const auto all = d_bf16.download();
    Vec got, want;
    for (int64_t i = 0; i < p.numel; ++i) {
      got.push_back(from_bf16(all[size_t(p.offset + i)]));
      want.push_back(params[size_t(p.offset + i)]);
    }
    CHECK(rel_diff(got, want) < kTolBf16);
  }
}

TEST_CASE("gpu global grad norm matches the CPU one", "[gpu][adamw]") {
  const uint64_t seed = 952;
  CAPTURE(seed);
  Rng rng(seed);
  const int64_t n = 1000003;
  std::vector<float> g(static_cast<size_t>(n));
  for (auto& x : g) x = float(rng.normal());
  auto d_g = upload(g);
  cuda::DeviceBuffer<float> out(1), scratch(kernels::kNormBlocks);
  kernels::global_grad_norm(out.data(), scratch.data(), d_g.data(), n, nullptr);
  const double gpu = out.download()[0], ref = global_grad_norm(g);
  CHECK(std::abs(gpu - ref) / ref < kTolF32);
  // Deterministic: the same bits on a second run.
  kernels::global_grad_norm(out.data(), scratch.data(), d_g.data(), n, nullptr);
  CHECK(out.download()[0] == float(gpu));
}
