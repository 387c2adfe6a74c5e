// Muon on the GPU against the CPU: CudaNewtonSchulz (src/optim/cuda_newton_schulz.hpp) against
// newton_schulz_cpu, whose bf16/fp16 modes emulate the GPU's rounding points, for both schedules
// and every precision on wide, tall, square, odd-sized and 3-D-slice matrices, batched (X X^T
// by blocks and in one GEMM) and one matrix at a time; CudaMuon (src/optim/cuda_muon.hpp) over 3 steps against Muon on the same
// random parameters and gradients (both update-scale rules, weight decay, a gradient scale);
// the state's names, shapes and a download/upload round trip.
//
// Tolerances, relative Frobenius error per matrix of NS(X) against the CPU on the same input:
//   fp32 kTolNsF32 = 1e-4   (fp32 GEMMs both sides; only the summation order differs)
//   fp16 kTolNsF16 = 1e-2   (both round every product to fp16, 2^-11; a rounding that flips on
//                            one side is carried through 5 steps whose slope reaches ~8 at small σ)
//   bf16 kTolNsBf16 = 3e-2  (the same with bf16, 2^-8)
// CudaMuon: the parameter change W - W0 against the CPU's, with NS at that precision's tolerance;
// the momentum kTolF32 (no NS in it).
#include <catch2/catch.hpp>

#include <cstdio>
#include <string>
#include <vector>

#include "gpu_testing.hpp"
#include "optim/cuda_muon.hpp"
#include "optim/cuda_newton_schulz.hpp"
#include "optim/muon.hpp"
#include "optim/newton_schulz.hpp"

using namespace pg;
using namespace pg::test;

namespace {

constexpr double kTolNsF32 = 1e-4;
constexpr double kTolNsF16 = 1e-2;
constexpr double kTolNsBf16 = 3e-2;

double ns_tolerance(NsPrecision p) {
  return p == NsPrecision::fp32 ? kTolNsF32 : p == NsPrecision::fp16 ? kTolNsF16 : kTolNsBf16;
}
const char* precision_name(NsPrecision p) {
  return p == NsPrecision::fp32 ? "fp32" : p == NsPrecision::fp16 ? "fp16" : "bf16";
}

std::vector<float> gaussian(Rng& rng, size_t n, double std = 1.0) {
  std::vector<float> v(n);
  for (float& x : v) x = float(std * rng.normal());
  return v;
}

std::vector<float> slice(const std::vector<float>& v, int64_t offset, int64_t n) {
  return {v.begin() + offset, v.begin() + offset + n};
}

// Muon and AdamW tensors side by side: CudaMuon must touch only the first kind.
ParamTable mixed_table() {
  ParamTable t;
  t.add("wte.weight", {40, 32}, Role::embed, true);
  t.add("h.0.attn.qkv.weight", {96, 32}, Role::attn, true);   // tall
  t.add("h.0.ln_1.weight", {32}, Role::norm, false);
  t.add("h.0.attn.proj.weight", {32, 32}, Role::attn, true);  // square
  t.add("h.0.mlp.proj.weight", {32, 96}, Role::mlp, true);    // wide, same group as qkv
  t.add("h.0.moe.w_in", {3, 80, 48}, Role::expert, true);     // 3 tall experts
  t.add("h.0.mlp.fc.weight", {37, 53}, Role::mlp, false);     // odd shape, no decay
  for (auto& p : t.entries()) p.muon = p.is_matrix() && p.role != Role::embed;
  return t;
}

}  // namespace

TEST_CASE("gpu Newton-Schulz matches newton_schulz_cpu for each precision and schedule", "[gpu][muon]") {
  const uint64_t seed = 1301;
  CAPTURE(seed);
  Rng rng(seed);
  // Wide, tall (same group), square, odd sizes across tile edges, and a 3-D tensor's 4 slices.
  std::vector<MatrixShape> shapes = {{64, 192}, {192, 64}, {96, 96}, {37, 100}, {100, 37}, {130, 70}};
  for (int e = 0; e < 4; ++e) shapes.push_back({80, 48});
  std::vector<int64_t> offsets;
  int64_t total = 0;
  for (const auto& s : shapes) offsets.push_back(total), total += int64_t(s.rows) * s.cols;
  cuda::Stream stream;
  for (const std::string schedule_name : {"keller5", "polar-express"}) {
    for (NsPrecision prec : {NsPrecision::bf16, NsPrecision::fp16, NsPrecision::fp32}) {
      CAPTURE(schedule_name, precision_name(prec));
      const double safety = prec == NsPrecision::fp16 ? 1.02 : 1.01;  // as Muon chooses
      const auto schedule = ns_schedule(schedule_name, 5, safety);
      const std::vector<float> input = gaussian(rng, size_t(total));
      std::vector<float> want = input;
      for (size_t i = 0; i < shapes.size(); ++i)
        newton_schulz_cpu(want.data() + offsets[i], 1, shapes[i].rows, shapes[i].cols, schedule, prec, safety);
      struct Mode {
        bool batched, symmetric;
        const char* name;
      };
      for (const Mode mode : {Mode{true, true, "batched, X X^T by blocks"}, Mode{true, false, "batched, full X X^T"},
                              Mode{false, true, "per-matrix"}}) {
        CAPTURE(mode.name);
        CudaNewtonSchulz ns(shapes, offsets, schedule, prec, safety, stream.get(), mode.batched, mode.symmetric);
        // By blocks where m % 16 == 0: 64x192, 96x96, 48x80; 37x100 and 70x130 in one GEMM.
        for (const auto& g : ns.groups()) CHECK(g.split == (mode.symmetric && g.m % 16 == 0));
        REQUIRE(ns.groups().size() == 5);  // 64x192 (x2), 96x96, 37x100 (x2), 70x130, 48x80 (x4)
        CHECK(ns.groups()[4].members.size() == 4);
        auto d = upload(input);
        ns.run(d.data());
        stream.synchronize();
        const auto got = d.download();
        double worst = 0.0;
        for (size_t i = 0; i < shapes.size(); ++i) {
          const int64_t n = int64_t(shapes[i].rows) * shapes[i].cols;
          const double err = rel_diff(slice(got, offsets[i], n), slice(want, offsets[i], n));
          CAPTURE(i, shapes[i].rows, shapes[i].cols);
          CHECK(err < ns_tolerance(prec));
          worst = std::max(worst, err);
        }
        // The output is an orthogonalisation, not a copy: its norm is about sqrt(min(rows, cols)).
        CHECK(rel_diff(got, input) > 0.5);
        std::printf("NS gpu vs cpu: %-13s %s %-25s: worst rel err %.2e (tol %.0e)\n", schedule_name.c_str(),
                    precision_name(prec), mode.name, worst, ns_tolerance(prec));
      }
    }
  }
}

TEST_CASE("gpu CudaMuon matches the CPU Muon over 3 steps", "[gpu][muon]") {
  const uint64_t seed = 1302;
  CAPTURE(seed);
  for (const std::string rule : {"keller", "moonlight"}) {
    for (const std::string precision : {"bf16", "fp32"}) {
      CAPTURE(rule, precision);
      Rng rng(seed);
      const ParamTable table = mixed_table();
      OptimConfig cfg;
      cfg.kind = "muon", cfg.muon_lr = 0.02, cfg.weight_decay = 0.1, cfg.muon_scale = rule;
      cfg.ns_precision = precision;
      Muon cpu(cfg, table);
      cuda::Stream stream;
      CudaMuon gpu(cfg, table, stream.get());
      const size_t total = size_t(table.total());
      const std::vector<float> w0 = gaussian(rng, total, 0.1);
      std::vector<float> w = w0;
      auto d_w = upload(w0);
      cuda::DeviceBuffer<bf16> d_wb(total);
      const std::vector<bf16> sentinel(total, to_bf16(7.0));
      d_wb.upload(std::span<const bf16>(sentinel));
      cuda::DeviceBuffer<float> d_g(total);
      const float grad_scale = 0.5f;
      const double lr_factor = 0.7;
      for (int64_t t = 1; t <= 3; ++t) {
        std::vector<float> g = gaussian(rng, total);
        d_g.upload(std::span<const float>(g));
        for (float& x : g) x *= grad_scale;  // the CPU optimizer receives clipped gradients
        cpu.step(w, g, lr_factor, t);
        gpu.step(d_w.data(), d_wb.data(), d_g.data(), grad_scale, lr_factor, t);
      }
      stream.synchronize();
      const auto got = d_w.download();
      const auto got_bf16 = d_wb.download();
      const double tol = precision == "fp32" ? kTolNsF32 : kTolNsBf16;
      for (const auto& p : table.entries()) {
        CAPTURE(p.name);
        std::vector<double> dw_gpu, dw_cpu;
        bool bf16_is_copy = true, untouched = true;
        for (int64_t i = p.offset; i < p.offset + p.numel; ++i) {
          dw_gpu.push_back(double(got[size_t(i)]) - w0[size_t(i)]);
          dw_cpu.push_back(double(w[size_t(i)]) - w0[size_t(i)]);
          bf16_is_copy &= from_bf16(got_bf16[size_t(i)]) == from_bf16(to_bf16(got[size_t(i)]));
          untouched &= got[size_t(i)] == w0[size_t(i)] && from_bf16(got_bf16[size_t(i)]) == 7.0;
        }
        if (p.muon) {
          CHECK(rel_diff(dw_gpu, dw_cpu) < tol);
          CHECK(bf16_is_copy);
        } else {
          CHECK(untouched);
        }
      }
      // The momentum, by name, against the CPU's.
      const auto cpu_state = cpu.state();
      const auto gpu_state = gpu.download_state();
      REQUIRE(gpu_state.size() == cpu_state.size());
      for (size_t i = 0; i < cpu_state.size(); ++i) {
        CAPTURE(cpu_state[i].name);
        CHECK(gpu_state[i].name == cpu_state[i].name);
        CHECK(gpu_state[i].shape == cpu_state[i].shape);
        REQUIRE(gpu_state[i].numel == cpu_state[i].numel);
        const std::vector<float> a(gpu_state[i].data, gpu_state[i].data + gpu_state[i].numel);
        const std::vector<float> b(cpu_state[i].data, cpu_state[i].data + cpu_state[i].numel);
        CHECK(rel_diff(a, b) < kTolF32);
      }
    }
  }
}

TEST_CASE("gpu CudaMuon state survives a download/upload round trip", "[gpu][muon]") {
  const uint64_t seed = 1303;
  CAPTURE(seed);
  Rng rng(seed);
  const ParamTable table = mixed_table();
  OptimConfig cfg;
  cfg.kind = "muon", cfg.ns_schedule = "keller5";
  cuda::Stream stream;
  const size_t total = size_t(table.total());
  const std::vector<float> w0 = gaussian(rng, total, 0.1);
  auto d_w = upload(w0);
  cuda::DeviceBuffer<float> d_g(total);
  CudaMuon a(cfg, table, stream.get());
  for (int64_t t = 1; t <= 2; ++t) {
    d_g.upload(std::span<const float>(gaussian(rng, total)));
    a.step(d_w.data(), nullptr, d_g.data(), 1.f, 1.0, t);
  }
  // A fresh optimizer given a's state through the host views, as a checkpoint loader does.
  const auto saved = a.download_state();
  CudaMuon b(cfg, table, stream.get());
  const auto views = b.download_state();
  REQUIRE(views.size() == saved.size());
  double norm = 0.0;
  for (size_t i = 0; i < saved.size(); ++i) {
    REQUIRE(views[i].name == saved[i].name);
    std::copy(saved[i].data, saved[i].data + saved[i].numel, views[i].data);
    for (int64_t j = 0; j < saved[i].numel; ++j) norm += double(saved[i].data[j]) * saved[i].data[j];
  }
  CHECK(norm > 0.0);  // two steps of momentum are not zeros
  b.upload_state();
  // One more identical step on each, from the same weights: the same bits.
  const std::vector<float> w2 = d_w.download();
  auto d_w2 = upload(w2);
  d_g.upload(std::span<const float>(gaussian(rng, total)));
  a.step(d_w.data(), nullptr, d_g.data(), 1.f, 1.0, 3);
  b.step(d_w2.data(), nullptr, d_g.data(), 1.f, 1.0, 3);
  stream.synchronize();
  CHECK(d_w.download() == d_w2.download());
  const auto sa = a.download_state(), sb = b.download_state();
  for (size_t i = 0; i < sa.size(); ++i)
    CHECK(std::vector<float>(sa[i].data, sa[i].data + sa[i].numel) ==
          std::vector<float>(sb[i].data, sb[i].data + sb[i].numel));
  CHECK(b.describe().front().find("5 shape groups") == std::string::npos);  // mixed_table has 4 groups
  CHECK(b.describe().front().find("4 shape groups") != std::string::npos);
}

TEST_CASE("gpu CudaMuon refuses bad settings with the key's name", "[gpu][muon]") {
  const ParamTable table = mixed_table();
  cuda::Stream stream;
  OptimConfig cfg;
  cfg.ns_precision = "fp8";
  CHECK_THROWS_WITH(CudaMuon(cfg, table, stream.get()), Catch::Contains("optim.ns_precision"));
  cfg = OptimConfig{};
  cfg.muon_scale = "huge";
  CHECK_THROWS_WITH(CudaMuon(cfg, table, stream.get()), Catch::Contains("optim.muon_scale"));
  cfg = OptimConfig{};
  cfg.ns_schedule = "cubic";
  CHECK_THROWS_WITH(CudaMuon(cfg, table, stream.get()), Catch::Contains("optim.ns_schedule"));
}
