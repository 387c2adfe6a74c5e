// The Mixture-of-Experts kernels (kernels/moe.cuh) and the CudaMoe block (model/cuda_moe.hpp)
// against the float64 CPU reference (backend/cpu/moe_ops.hpp, model/cpu_moe.hpp), whose backwards
// are themselves checked against float64 finite differences in tests/backend/test_moe_ops.cpp.
//
// Tolerances (gpu_testing.hpp's rule, relative ‖gpu − ref‖/‖ref‖): routing results and gradients
// stored in fp32: kTolF32 (1e-4); the fp64 router losses: 1e-5 (fp32 probabilities summed in
// fp64); token rows stored in bf16: kTolBf16 (1e-2); integers (selection, plan, counts) exactly.
// The block: y and dx 3e-2 (two bf16 GEMMs with bf16 intermediates, kTolGemm and a margin), each
// parameter gradient 5e-2 (as the whole-model test), the stats exactly / 1e-4; a second run of
// the block is bit-identical (no float atomics).
//
// Selections are exact only where no two scores are closer than the GPU's rounding: inputs are
// redrawn on the host until every token's k-th and (k+1)-th scores differ by more than 1e-3,
// except the ties built on purpose (two equal top logits with equal biases), which both sides
// must break to the lower index.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "backend/cpu/moe_ops.hpp"
#include "backend/cpu/ops.hpp"
#include "backend/cuda/gemm.hpp"
#include "config/config.hpp"
#include "gpu_testing.hpp"
#include "kernels/moe.cuh"
#include "model/cpu_gpt.hpp"
#include "model/cpu_moe.hpp"
#include "model/cuda_gpt.hpp"
#include "model/cuda_moe.hpp"
#include "model/gpt.hpp"

using namespace pg;
using namespace pg::test;

namespace {

using I32 = std::vector<int32_t>;

Vec f32_round(const Vec& v) {
  Vec o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = double(float(v[i]));
  return o;
}

// Score margin of one token: (k-th best − (k+1)-th best) of probs + bias; +inf when k == E.
double token_margin(const double* p, const Vec* bias, int E, int k) {
  Vec s(static_cast<size_t>(E));
  for (int e = 0; e < E; ++e) s[size_t(e)] = p[e] + (bias ? (*bias)[size_t(e)] : 0.0);
  std::sort(s.begin(), s.end(), std::greater<>());
  return k < E ? s[size_t(k - 1)] - s[size_t(k)] : 1e9;
}

// The CPU plan's packed rows as the GPU's padded rows: packed row begin[e] + p is e·cap + p.
Vec to_padded(const Vec& packed, const std::vector<int64_t>& begin, int E, int cap, int W) {
  Vec out(size_t(E) * cap * W, 0.0);
  for (int e = 0; e < E; ++e)
    for (int64_t r = begin[size_t(e)]; r < begin[size_t(e) + 1]; ++r)
      std::copy_n(packed.begin() + r * W, W, out.begin() + (int64_t(e) * cap + (r - begin[size_t(e)])) * W);
  return out;
}
Vec to_packed(const Vec& padded, const std::vector<int64_t>& begin, int E, int cap, int W) {
  Vec out(size_t(begin[size_t(E)]) * W, 0.0);
  for (int e = 0; e < E; ++e)
    for (int64_t r = begin[size_t(e)]; r < begin[size_t(e) + 1]; ++r)
      std::copy_n(padded.begin() + (int64_t(e) * cap + (r - begin[size_t(e)])) * W, W, out.begin() + r * W);
  return out;
}

// Random distinct top-k selections, skewed towards the low experts so some overflow a capacity.
I32 random_selection(Rng& rng, int N, int E, int k) {
  I32 sel(size_t(N) * k);
  for (int n = 0; n < N; ++n)
    for (int j = 0; j < k; ++j) {
      int e;
      do {
        e = rng.uniform() < 0.4 ? int(rng.below(3)) : int(rng.below(uint64_t(E)));
      } while (std::find(sel.begin() + int64_t(n) * k, sel.begin() + int64_t(n) * k + j, e) !=
               sel.begin() + int64_t(n) * k + j);
      sel[size_t(n) * k + j] = e;
    }
  return sel;
}

}  // namespace

TEST_CASE("gpu moe router: softmax, top-k with ties, gates, backward and losses", "[gpu][moe]") {
  const int k = GENERATE(1, 2);
  const bool with_bias = GENERATE(false, true);
  const uint64_t seed = 1201;
  CAPTURE(k, with_bias, seed);
  Rng rng(seed);
  const int N = 77, E = 6;
  // Exactly representable biases with a tie between experts 1 and 4.
  const Vec bias = {0.25, 0.5, 0.0, 0.25, 0.5, -0.25};
  const Vec* bp = with_bias ? &bias : nullptr;
  Vec logits(size_t(N) * E);
  Vec probs(size_t(N) * E), lse(N), gates(size_t(N) * k);
  I32 sel(size_t(N) * k);
  int n_ties = 0;
  for (int n = 0; n < N; ++n) {
    double* z = logits.data() + int64_t(n) * E;
    for (int attempt = 0;; ++attempt) {
      REQUIRE(attempt < 1000);
      for (int e = 0; e < E; ++e) z[e] = float(2.0 * rng.normal());
      const bool tie = n % 5 == 0;
      if (tie) {  // experts 1 and 4 tie on top, far above the rest
        const double top = *std::max_element(z, z + E) + 1.5;
        z[1] = z[4] = float(top);
      }
      double p[8], l;
      int32_t s[2];
      double g[2];
      cpu::router_fwd<double>(p, &l, s, g, z, with_bias ? bias.data() : nullptr, 1, E, k);
      if (tie) {
        if (k == 2 && token_margin(p, bp, E, 2) < 1e-3) continue;
        ++n_ties;
        break;
      }
      if (token_margin(p, bp, E, k) > 1e-3) break;
    }
  }
  REQUIRE(n_ties > 10);
  cpu::router_fwd<double>(probs.data(), lse.data(), sel.data(), gates.data(), logits.data(),
                          with_bias ? bias.data() : nullptr, N, E, k);
  for (int n = 0; n < N; n += 5) CHECK(sel[size_t(n) * k] == 1);  // the tie goes to the lower index
  if (k == 2)
    for (int n = 0; n < N; n += 5) CHECK(sel[size_t(n) * k + 1] == 4);

  cuda::Stream stream;
  const cudaStream_t st = stream.get();
  auto d_logits = upload_f32(logits);
  auto d_bias = upload_bf16(bias);
  cuda::DeviceBuffer<float> d_probs(size_t(N) * E), d_lse(N), d_gates(size_t(N) * k);
  cuda::DeviceBuffer<int32_t> d_sel(size_t(N) * k);
  kernels::moe_router_fwd(d_probs.data(), d_lse.data(), d_sel.data(), d_gates.data(), d_logits.data(),
                          with_bias ? d_bias.data() : nullptr, N, E, k, st);
  stream.synchronize();
  CHECK(rel_diff(download(d_probs), probs) < kTolF32);
  CHECK(rel_diff(download(d_lse), lse) < kTolF32);
  CHECK(rel_diff(download(d_gates), gates) < kTolF32);
  CHECK(d_sel.download() == sel);

  // Backward: gates + aux + z in one kernel, against the three CPU backwards on the same inputs.
  std::vector<int32_t> slot(size_t(N) * k), row_token(size_t(N) * k);
  std::vector<int64_t> begin(E + 1), counts(E);
  cpu::moe_dispatch_plan(slot.data(), row_token.data(), begin.data(), counts.data(), sel.data(), N, E, k, N);
  const Vec P32 = f32_round(probs), L32 = f32_round(lse), G32 = f32_round(gates);
  const Vec dg = f32_round(randn(rng, int64_t(N) * k));
  const double aux_scale = 0.7, z_scale = 0.3;
  Vec dl(size_t(N) * E, 0.0);
  cpu::router_gates_bwd(dl.data(), dg.data(), G32.data(), sel.data(), N, E, k);
  cpu::router_aux_loss_bwd(dl.data(), P32.data(), counts.data(), N, E, k, aux_scale);
  cpu::router_z_loss_bwd(dl.data(), P32.data(), L32.data(), N, E, z_scale);
  auto d_p = upload_f32(P32), d_l = upload_f32(L32), d_g = upload_f32(G32), d_dg = upload_f32(dg);
  auto d_counts = upload(I32(counts.begin(), counts.end()));
  cuda::DeviceBuffer<float> d_dl(size_t(N) * E);
  cuda::DeviceBuffer<bf16> d_dl16(size_t(N) * E);
  kernels::moe_router_bwd(d_dl.data(), d_dl16.data(), d_dg.data(), d_g.data(), d_sel.data(), d_p.data(), d_l.data(),
                          d_counts.data(), N, E, k, aux_scale, z_scale, st);
  // Each term alone too (a missing or doubled term could hide in the sum).
  Vec dl_gates(size_t(N) * E, 0.0);
  cpu::router_gates_bwd(dl_gates.data(), dg.data(), G32.data(), sel.data(), N, E, k);
  cuda::DeviceBuffer<float> d_dl_gates(size_t(N) * E);
  kernels::moe_router_bwd(d_dl_gates.data(), nullptr, d_dg.data(), d_g.data(), d_sel.data(), d_p.data(), d_l.data(),
                          d_counts.data(), N, E, k, 0.0, 0.0, st);
  Vec dl_aux(size_t(N) * E, 0.0);
  cpu::router_aux_loss_bwd(dl_aux.data(), P32.data(), counts.data(), N, E, k, aux_scale);
  cuda::DeviceBuffer<float> d_dl_aux(size_t(N) * E);
  kernels::moe_router_bwd(d_dl_aux.data(), nullptr, nullptr, d_g.data(), d_sel.data(), d_p.data(), d_l.data(),
                          d_counts.data(), N, E, k, aux_scale, 0.0, st);
  // Losses.
  cuda::DeviceBuffer<double> d_losses(2), d_scratch(E);
  kernels::moe_router_loss_fwd(d_losses.data(), d_scratch.data(), d_p.data(), d_l.data(), d_counts.data(), N, E, k,
                               st);
  stream.synchronize();
  if (k == 1) {
    // One gate is always 1: nothing flows through it.
    double m = 0;
    for (float v : d_dl_gates.download()) m = std::max(m, double(std::abs(v)));
    CHECK(m < 1e-6);
  } else {
    CHECK(rel_diff(to_vec(d_dl_gates.download()), dl_gates) < kTolF32);
  }
  CHECK(rel_diff(to_vec(d_dl_aux.download()), dl_aux) < kTolF32);
  CHECK(rel_diff(to_vec(d_dl.download()), dl) < kTolF32);
  CHECK(rel_diff(download(d_dl16), dl) < kTolBf16);
  const std::vector<double> losses = d_losses.download();
  const double aux = cpu::router_aux_loss_fwd(P32.data(), counts.data(), N, E, k);
  const double z = cpu::router_z_loss_fwd(L32.data(), N);
  CHECK(std::abs(losses[0] - aux) / aux < 1e-5);
  CHECK(std::abs(losses[1] - z) / z < 1e-5);
}

TEST_CASE("gpu moe dispatch plan, gather/scatter and combine match the CPU in priority order", "[gpu][moe]") {
  const double cf = GENERATE(0.0, 0.6);  // dropless, and a capacity that drops
  // C = 40: the row kernels' 16-byte path (one warp per row); C = 36: their element-wise path.
  const int C = GENERATE(40, 36);
  const uint64_t seed = 1301;
  CAPTURE(cf, C, seed);
  Rng rng(seed);
  const int N = 300, E = 8, k = 2;  // N·k = 600: three plan chunks
  const int cap = cf > 0 ? std::min(N, int(std::ceil(cf * N * k / E))) : N;
  const I32 sel = random_selection(rng, N, E, k);
  I32 slot(size_t(N) * k), row_token(size_t(N) * k);
  std::vector<int64_t> begin(E + 1), counts(E);
  const int64_t R = cpu::moe_dispatch_plan(slot.data(), row_token.data(), begin.data(), counts.data(), sel.data(), N,
                                           E, k, cap);
  if (cf > 0) REQUIRE(R < int64_t(N) * k);  // some assignments are dropped
  else REQUIRE(R == int64_t(N) * k);

  cuda::Stream stream;
  const cudaStream_t st = stream.get();
  auto d_sel = upload(sel);
  cuda::DeviceBuffer<int32_t> d_slot(size_t(N) * k), d_row_src(size_t(E) * cap), d_counts(E);
  cuda::DeviceBuffer<int32_t> d_scratch(size_t(kernels::moe_plan_scratch_ints(N, k, E)));
  kernels::moe_dispatch_plan(d_slot.data(), d_row_src.data(), d_counts.data(), d_scratch.data(), d_sel.data(), N, E,
                             k, cap, st);
  stream.synchronize();
  const I32 g_slot = d_slot.download(), g_row_src = d_row_src.download(), g_counts = d_counts.download();
  CHECK(g_counts == I32(counts.begin(), counts.end()));
  int64_t kept = 0, mismatches = 0;
  for (int64_t i = 0; i < int64_t(N) * k; ++i) {
    const int e = sel[size_t(i)];
    const int64_t want = slot[size_t(i)] < 0 ? -1 : int64_t(e) * cap + (slot[size_t(i)] - begin[size_t(e)]);
    mismatches += g_slot[size_t(i)] != want;
    if (want >= 0) mismatches += g_row_src[size_t(want)] != i;
  }
  for (int32_t s : g_row_src) kept += s >= 0;
  CHECK(mismatches == 0);
  CHECK(kept == R);

  // Gather, then scatter (its backward) with and without accumulation.
  const Vec x = round_bf16(randn(rng, int64_t(N) * C));
  Vec xe(size_t(R) * C);
  cpu::moe_gather(xe.data(), x.data(), row_token.data(), R, C);
  auto d_x = upload_bf16(x);
  cuda::DeviceBuffer<bf16> d_xe(size_t(E) * cap * C);
  kernels::moe_gather(d_xe.data(), d_x.data(), d_row_src.data(), E, cap, k, C, st);
  const Vec dxe_pad = round_bf16(randn(rng, int64_t(E) * cap * C));  // padding rows random: never read
  const Vec dx0 = round_bf16(randn(rng, int64_t(N) * C));
  Vec dx = dx0;
  cpu::moe_scatter_add(dx.data(), to_packed(dxe_pad, begin, E, cap, C).data(), slot.data(), N, k, C);
  Vec dx_w(size_t(N) * C, 0.0);
  cpu::moe_scatter_add(dx_w.data(), to_packed(dxe_pad, begin, E, cap, C).data(), slot.data(), N, k, C);
  auto d_dxe = upload_bf16(dxe_pad), d_dx = upload_bf16(dx0), d_dx_w = upload_bf16(dx0);
  kernels::moe_scatter(d_dx.data(), true, d_dxe.data(), d_slot.data(), N, k, C, st);
  kernels::moe_scatter(d_dx_w.data(), false, d_dxe.data(), d_slot.data(), N, k, C, st);
  stream.synchronize();
  CHECK(download(d_xe) == to_padded(xe, begin, E, cap, C));  // copies and zeros: exact
  CHECK(rel_diff(download(d_dx), dx) < kTolBf16);
  CHECK(rel_diff(download(d_dx_w), dx_w) < kTolBf16);

  // Combine forward and backward.
  const Vec eo_pad = round_bf16(randn(rng, int64_t(E) * cap * C));
  Vec gates(size_t(N) * k);
  for (auto& g : gates) g = double(float(0.1 + rng.uniform()));
  const Vec eo = to_packed(eo_pad, begin, E, cap, C);
  Vec y(size_t(N) * C);
  cpu::moe_combine_fwd(y.data(), eo.data(), gates.data(), slot.data(), N, k, C);
  const Vec dy = round_bf16(randn(rng, int64_t(N) * C));
  Vec deo(size_t(R) * C), dgates(size_t(N) * k);
  cpu::moe_combine_bwd(deo.data(), dgates.data(), dy.data(), eo.data(), gates.data(), slot.data(), N, k, C);
  auto d_eo = upload_bf16(eo_pad), d_dy = upload_bf16(dy);
  auto d_gates = upload_f32(gates);
  cuda::DeviceBuffer<bf16> d_y(size_t(N) * C), d_deo(size_t(E) * cap * C);
  cuda::DeviceBuffer<float> d_dgates(size_t(N) * k);
  kernels::moe_combine_fwd(d_y.data(), d_eo.data(), d_gates.data(), d_slot.data(), N, k, C, st);
  kernels::moe_combine_bwd(d_deo.data(), d_dgates.data(), d_dy.data(), d_eo.data(), d_gates.data(), d_row_src.data(),
                           N, E, cap, k, C, st);
  stream.synchronize();
  CHECK(rel_diff(download(d_y), y) < kTolBf16);
  const Vec g_deo = download(d_deo);
  CHECK(rel_diff(g_deo, to_padded(deo, begin, E, cap, C)) < kTolBf16);
  double pad_max = 0;  // padding rows of deo are exactly zero
  for (int e = 0; e < E; ++e)
    for (int64_t p = begin[size_t(e) + 1] - begin[size_t(e)]; p < cap; ++p)
      for (int c = 0; c < C; ++c) pad_max = std::max(pad_max, std::abs(g_deo[size_t((int64_t(e) * cap + p) * C + c)]));
  CHECK(pad_max == 0.0);
  CHECK(rel_diff(download(d_dgates), dgates) < kTolF32);
}

TEST_CASE("gpu moe per-expert bias add and bias gradient", "[gpu][moe]") {
  const uint64_t seed = 1401;
  CAPTURE(seed);
  Rng rng(seed);
  const int E = 5, cap = 37, OC = 70;
  const Vec out0 = round_bf16(randn(rng, int64_t(E) * cap * OC)), bias = round_bf16(randn(rng, int64_t(E) * OC));
  const Vec db0 = f32_round(randn(rng, int64_t(E) * OC));
  Vec out = out0, db = db0;
  for (int e = 0; e < E; ++e)
    for (int p = 0; p < cap; ++p)
      for (int c = 0; c < OC; ++c) {
        out[size_t((int64_t(e) * cap + p) * OC + c)] += bias[size_t(e * OC + c)];
        db[size_t(e * OC + c)] += out0[size_t((int64_t(e) * cap + p) * OC + c)];
      }
  cuda::Stream stream;
  auto d_out = upload_bf16(out0), d_bias = upload_bf16(bias), d_dout = upload_bf16(out0);
  auto d_db = upload_f32(db0);
  kernels::moe_expert_bias_fwd(d_out.data(), d_bias.data(), E, cap, OC, stream.get());
  kernels::moe_expert_bias_bwd(d_db.data(), d_dout.data(), E, cap, OC, stream.get());
  stream.synchronize();
  CHECK(rel_diff(download(d_out), out) < kTolBf16);
  CHECK(rel_diff(download(d_db), db) < kTolF32);
}

namespace {

// The MoE block of layer 0 on the GPU against CpuMoe<double> on the same bf16 weights and inputs.
void check_block(const std::vector<std::string>& sets, uint64_t seed, bool expect_drops, bool fused) {
  std::vector<std::string> all = {"model.variant=moe", "model.n_layer=1", "model.n_head=2", "model.d_model=64",
                                  "model.vocab_size=64", "model.seq_len=16", "moe.n_expert=8", "moe.d_ff_expert=48",
                                  "moe.aux_loss_coef=0.1", "moe.z_loss_coef=0.05"};
  all.insert(all.end(), sets.begin(), sets.end());
  const Config cfg = default_config(all);
  const ParamTable table = build_gpt_params(cfg);
  const int N = 96, C = cfg.model.d_model, E = cfg.moe.n_expert, k = cfg.moe.top_k;
  Rng rng(seed);
  Vec P(size_t(table.total()), 0.0);
  for (const auto& p : table.entries()) {
    const bool router = p.name.find("router.weight") != std::string::npos;
    const bool score_bias = p.name.find("score_bias") != std::string::npos;
    for (int64_t i = 0; i < p.numel; ++i)
      P[size_t(p.offset + i)] = router ? 0.3 * rng.normal() : score_bias ? 0.05 * rng.normal()
                                : p.role == Role::bias ? 0.1 * rng.normal() : 0.15 * rng.normal();
  }
  P = round_bf16(P);
  // Inputs with every token's selection margin > 1e-3 (redraw a token's row until it is).
  Vec x = round_bf16(randn(rng, int64_t(N) * C));
  const int64_t router = table.offset_of("h.0.moe.router.weight"), sb = table.offset_of("h.0.moe.router.score_bias");
  Vec bias;
  if (sb >= 0) bias.assign(P.begin() + sb, P.begin() + sb + E);
  for (int n = 0; n < N; ++n)
    for (int attempt = 0;; ++attempt) {
      REQUIRE(attempt < 1000);
      double z[64], p[64], l, g[8];
      int32_t s[8];
      cpu::matmul_fwd<double>(z, x.data() + int64_t(n) * C, P.data() + router, nullptr, 1, C, E);
      cpu::router_fwd<double>(p, &l, s, g, z, sb >= 0 ? bias.data() : nullptr, 1, E, k);
      if (token_margin(p, sb >= 0 ? &bias : nullptr, E, k) > 1e-3) break;
      const Vec row = round_bf16(randn(rng, C));
      std::copy(row.begin(), row.end(), x.begin() + int64_t(n) * C);
    }
  const Vec dy = round_bf16(randn(rng, int64_t(N) * C));
  const double loss_scale = 2.0;

  CpuMoe<double> cpu_block(cfg, table, 0, N);
  Vec acts(size_t(CpuMoe<double>::activation_elems(cfg, N))), scratch(size_t(CpuMoe<double>::scratch_elems(cfg, N)));
  cpu_block.bind(acts.data(), scratch.data());
  Vec y(size_t(N) * C), dx(size_t(N) * C, 0.0), G(P.size(), 0.0);
  cpu_block.forward(P.data(), x.data(), y.data(), N);
  cpu_block.backward(P.data(), G.data(), dy.data(), dx.data(), loss_scale);
  const MoeLayerStats& cs = cpu_block.stats();
  if (expect_drops) REQUIRE(cs.dropped > 0);
  else REQUIRE(cs.dropped == 0);

  cuda::Stream stream;
  cuda::GemmRunner gemm(stream.get());
  CudaMoe gpu_block(cfg, table, 0, N, gemm, stream.get());
  gpu_block.set_fused_epilogues(fused);
  cuda::DeviceBuffer<std::byte> d_acts(CudaMoe::activation_bytes(cfg, N)), d_scr(CudaMoe::scratch_bytes(cfg, N));
  gpu_block.bind(d_acts.data(), d_scr.data());
  auto d_P = upload_bf16(P), d_x = upload_bf16(x), d_dy = upload_bf16(dy);
  cuda::DeviceBuffer<bf16> d_y(size_t(N) * C), d_dx(size_t(N) * C);
  cuda::DeviceBuffer<float> d_G(P.size());
  d_G.zero(stream.get());
  gpu_block.forward(d_P.data(), d_x.data(), d_y.data(), N);
  gpu_block.backward(d_P.data(), d_G.data(), d_dy.data(), d_dx.data(), loss_scale);
  stream.synchronize();
  const MoeLayerStats gs = gpu_block.stats();
  CHECK(gpu_block.epilogues_fused() == fused);  // cuBLASLt fuses the batched epilogues here

  CAPTURE(cs.dropped, gs.dropped, cs.aux, gs.aux, cs.z, gs.z);
  CHECK(gs.load == cs.load);
  CHECK(gs.dropped == cs.dropped);
  CHECK(gs.assignments == cs.assignments);
  CHECK(std::abs(gs.aux - cs.aux) / cs.aux < 1e-4);
  CHECK(std::abs(gs.z - cs.z) / cs.z < 1e-4);
  CHECK(std::abs(gpu_block.objective() - cpu_block.objective()) / cpu_block.objective() < 1e-4);
  CHECK(rel_diff(download(d_y), y) < 3e-2);
  CHECK(rel_diff(download(d_dx), dx) < 3e-2);
  const std::vector<float> gG = d_G.download();
  int checked = 0;
  for (const auto& p : table.entries()) {
    if (p.name.rfind("h.0.moe.", 0) != 0) continue;
    const Vec ref(G.begin() + p.offset, G.begin() + p.offset + p.numel);
    const Vec got(gG.begin() + p.offset, gG.begin() + p.offset + p.numel);
    const std::string name = p.name;
    CAPTURE(name);
    if (name.find("score_bias") != std::string::npos) {  // selection only: no gradient on either side
      CHECK(std::all_of(got.begin(), got.end(), [](double v) { return v == 0.0; }));
      continue;
    }
    CHECK(rel_diff(got, ref) < 5e-2);
    ++checked;
  }
  CHECK(checked >= 3);

  // Deterministic: a second step on the same inputs gives bit-identical outputs and gradients.
  const std::vector<bf16> y1 = d_y.download(), dx1 = d_dx.download();
  d_G.zero(stream.get());
  gpu_block.forward(d_P.data(), d_x.data(), d_y.data(), N);
  gpu_block.backward(d_P.data(), d_G.data(), d_dy.data(), d_dx.data(), loss_scale);
  stream.synchronize();
  const std::vector<bf16> y2 = d_y.download(), dx2 = d_dx.download();
  CHECK(std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(bf16)) == 0);
  CHECK(std::memcmp(dx1.data(), dx2.data(), dx1.size() * sizeof(bf16)) == 0);
  CHECK(d_G.download() == gG);
}

}  // namespace

TEST_CASE("gpu CudaMoe block matches CpuMoe: forward, backward, stats", "[gpu][moe]") {
  // Both paths of the expert GEMMs: biases and GELU (and its gradient) in the batched epilogues,
  // and as separate passes.
  const bool fused = GENERATE(true, false);
  CAPTURE(fused);
  SECTION("GELU, biases, top-2, capacity 0.75 (drops), aux balance, one shared expert") {
    check_block({"moe.top_k=2", "moe.capacity_factor=0.75", "moe.n_shared=1", "model.activation=gelu",
                 "model.bias=true"},
                1501, true, fused);
  }
  SECTION("ReLU², no biases, top-2, dropless, bias balance") {
    check_block({"moe.top_k=2", "moe.capacity_factor=0", "moe.balance=bias", "model.activation=relu2",
                 "model.bias=false"},
                1502, false, fused);
  }
  SECTION("top-1, capacity 1.0, aux balance") {
    check_block({"moe.top_k=1", "moe.capacity_factor=1.0", "model.activation=gelu"}, 1503, true, fused);
  }
}

namespace {

// CudaGpt with MoE blocks against CpuGpt<double>: loss, router objective, every gradient (as the
// dense model test: loss 1e-2, each tensor 5e-2, tensors with a zero gradient held to 1e-2 of the
// largest gradient norm). The routing must be the same on both sides although the GPU's block
// inputs are bf16: the router is set so that the selection cannot flip (see the sections).
void check_model(const std::vector<std::string>& sets, uint64_t seed, bool zero_router, bool residual_in_gemm = true) {
  std::vector<std::string> all = {"model.variant=moe", "model.n_layer=2", "model.n_head=2", "model.d_model=64",
                                  "model.vocab_size=96", "model.seq_len=32", "moe.n_expert=8", "moe.top_k=2",
                                  "moe.d_ff_expert=48", "moe.every=2", "moe.aux_loss_coef=0.1",
                                  "moe.z_loss_coef=0.05"};
  all.insert(all.end(), sets.begin(), sets.end());
  const Config cfg = default_config(all);
  const ParamTable table = build_gpt_params(cfg);
  Rng rng(seed);
  Vec P(size_t(table.total()), 0.0);
  for (const auto& p : table.entries()) {
    const bool router = p.name.find("router.weight") != std::string::npos;
    const bool score_bias = p.name.find("score_bias") != std::string::npos;
    for (int64_t i = 0; i < p.numel; ++i) {
      double x = p.role == Role::norm ? 1.0 + 0.2 * rng.normal() : p.role == Role::bias ? 0.1 * rng.normal()
                                                                                       : 0.15 * rng.normal();
      if (router) x = zero_router ? 0.0 : 0.02 * rng.normal();
      // Selection biases far apart: experts 5 then 2 win for every token whatever the probabilities.
      if (score_bias) x = i == 5 ? 1.0 : i == 2 ? 0.75 : 0.05 * double(i);
      P[size_t(p.offset + i)] = x;
    }
  }
  P = round_bf16(P);
  const int B = 2, T = cfg.model.seq_len, V = cfg.model.vocab_size;
  const auto x = rand_ints(rng, int64_t(B) * T, V), y = rand_ints(rng, int64_t(B) * T, V);

  CpuGpt<double> cpu_model(cfg, table, B);
  Vec G(P.size(), 0.0);
  const double loss_scale = 1.5;
  const double cpu_loss = cpu_model.forward(P.data(), x.data(), y.data(), B, T);
  const double cpu_obj = cpu_model.moe_objective();
  const auto cpu_stats = cpu_model.moe_stats();
  cpu_model.backward(P.data(), G.data(), loss_scale);

  cuda::Stream stream;
  CudaGpt gpu_model(cfg, table, B, stream.get());
  gpu_model.set_residual_in_gemm(residual_in_gemm);
  auto d_P = upload_bf16(P);
  auto d_x = upload(x), d_y = upload(y);
  cuda::DeviceBuffer<float> d_G(P.size());
  d_G.zero(stream.get());
  const double gpu_loss = gpu_model.forward(d_P.data(), d_x.data(), d_y.data(), B, T);
  const double gpu_obj = gpu_model.moe_objective();
  const auto gpu_stats = gpu_model.moe_stats();
  gpu_model.backward(d_P.data(), d_G.data(), loss_scale);
  stream.synchronize();
  const std::vector<float> gG = d_G.download();

  CAPTURE(cpu_loss, gpu_loss, cpu_obj, gpu_obj);
  CHECK(std::abs(gpu_loss - cpu_loss) / cpu_loss < 1e-2);
  CHECK(std::abs(gpu_obj - cpu_obj) / cpu_obj < 1e-2);
  REQUIRE(gpu_stats.size() == cpu_stats.size());
  REQUIRE(cpu_stats.size() == 1);
  CHECK(gpu_stats[0].layer == cpu_stats[0].layer);
  CHECK(gpu_stats[0].load == cpu_stats[0].load);
  CHECK(gpu_stats[0].dropped == cpu_stats[0].dropped);
  check_every_gradient(table, G, gG);
}

}  // namespace

TEST_CASE("gpu CudaGpt with MoE blocks: loss, router objective and every gradient match CpuGpt", "[gpu][moe]") {
  SECTION("bias balance, dropless: selection fixed by far-apart selection biases") {
    check_model({"moe.balance=bias", "moe.capacity_factor=0"}, 1601, false);
  }
  SECTION("aux balance, capacity 1.0 (drops): a zero router, every score tied, ties to the lower index") {
    check_model({"moe.balance=aux", "moe.capacity_factor=1.0", "moe.n_shared=1"}, 1602, true);
  }
  SECTION("the residual adds of every block in the norm kernels (CudaGpt::set_residual_in_gemm(false))") {
    check_model({"moe.balance=bias", "moe.capacity_factor=0"}, 1603, false, false);
  }
}
