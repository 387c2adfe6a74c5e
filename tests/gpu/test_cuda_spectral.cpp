// CudaSpectral (spectral/cuda_constrain.hpp) against the CPU: project_constrained for every method
// on random matrices of several shapes (square, tall, wide, a 3-D expert tensor's slices, a
// strongly rectangular head and a strongly wide matrix that take the Gram form of the hard cap),
// two steps so that warm starts are exercised; the bf16 working copy; sigma_max after projection
// by an independent float64 Jacobi SVD; the embedding max-norm of the lipschitz variant; the
// monitor's records and the certificate against spectral_monitor_lines; the power vectors'
// round trip through download_state / upload_state.
//
// Tolerances, relative ‖gpu − cpu‖/‖cpu‖ per matrix after projection (the inputs are fp32 on both
// sides, so differences are the GPU's rounding); in brackets the worst measured on an H200:
//   normalize, hammer  float64 power iteration on both sides, any precision   1e-5  [0: bit-exact]
//   softcap            spectral.precision fp32 1e-6 [5e-8], fp16 2e-4 [3.2e-5], bf16 2e-3 [2.5e-4]
//                      (the operand rounding only touches the small correction a M M^T M)
//   hardcap            fp32 2e-5 [3.4e-6], fp16 1e-2 [4.4e-3], bf16 5e-2 [3.0e-2]
// sigma_max after projection, relative excess over the bound w by a float64 Jacobi SVD:
//   hardcap, softcap   fp32 1e-4 [1.9e-6], fp16 5e-3 [1.7e-3], bf16 3e-2 [1.5e-2] (a capped value
//                      lands at beta f, f the low-precision polar factor's singular value)
//   normalize          1e-2 [1.3e-3] whatever the precision: power iteration under-estimates sigma_1
//                      (24 cold iterations on spectra whose top two values are 7.5% apart), on the
//                      CPU identically (ALGORITHMS.md section 3; the check is w (1 + 1e-2)).
// Monitor: fp32 polar and power estimates within 1e-4 of the CPU's [6e-8 ns3-accurate, 6e-7
// ns5-fast, 6e-16 power], polar ones at fp16 1e-2 [1.0e-4 ns3-accurate, 1.2e-3 ns5-fast] and bf16
// 5e-2 [8.7e-4, 9.2e-3] (the polar factor's rounding);
// certificate log10 within 1e-6. The measured figures are printed.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "common/svd.hpp"
#include "config/config.hpp"
#include "gpu_testing.hpp"
#include "model/gpt.hpp"
#include "spectral/constrain.hpp"
#include "spectral/cuda_constrain.hpp"
#include "spectral/projection.hpp"
#include "spectral/spectral_log.hpp"

using namespace pg;
using namespace pg::test;

namespace {

// A table with every shape class; w_max 1 (head 2).
ParamTable spectral_table(bool with_embedding) {
  ParamTable t;
  if (with_embedding) t.add("wte.weight", {64, 32}, Role::embed, false);
  t.add("h.0.attn.q.weight", {48, 48}, Role::attn, true);
  t.add("h.0.attn.k.weight", {48, 48}, Role::attn, true);
  t.add("h.0.mlp.fc.weight", {96, 32}, Role::mlp, true);     // tall
  t.add("h.0.mlp.proj.weight", {32, 96}, Role::mlp, false);  // wide, no weight decay
  t.add("h.0.ln.weight", {32}, Role::norm, false);
  t.add("h.1.moe.experts.fc", {3, 40, 24}, Role::expert, true);  // 3 slices
  t.add("h.1.attn.wide.weight", {16, 256}, Role::attn, true);    // Gram form, wide
  t.add("lm_head.weight", {512, 32}, Role::head, true);          // Gram form, tall
  return t;
}

// Each matrix slice gets singular values log-spaced from top down by 10x, Haar-random vectors.
std::vector<float> spectral_params(const ParamTable& t, Rng& rng, const std::function<double(const ParamInfo&)>& top) {
  std::vector<float> P(size_t(t.total()), 0.f);
  for (const auto& p : t.entries()) {
    if (!p.is_matrix()) {
      for (int64_t i = 0; i < p.numel; ++i) P[size_t(p.offset + i)] = float(1.0 + 0.1 * rng.normal());
      continue;
    }
    const int rows = int(p.rows()), cols = int(p.cols());
    for (int64_t s = 0; s < matrix_slices(p); ++s) {
      std::vector<double> W;
      if (p.role == Role::embed) {
        W.resize(size_t(rows) * cols);
        for (auto& x : W) x = 1.5 * rng.normal();
      } else {
        W = testing::with_singular_values(rows, cols, testing::log_spaced(std::min(rows, cols), top(p), 10.0), rng).W;
      }
      for (size_t i = 0; i < W.size(); ++i) P[size_t(p.offset + s * rows * cols) + i] = float(W[i]);
    }
  }
  return P;
}

std::vector<float> slice_of(const std::vector<float>& P, const ParamInfo& p, int64_t s) {
  const size_t n = size_t(p.rows() * p.cols());
  const auto b = P.begin() + p.offset + s * int64_t(n);
  return {b, b + int64_t(n)};
}

double sigma_1(const std::vector<float>& W, int rows, int cols) {
  const std::vector<double> d(W.begin(), W.end());
  return testing::jacobi_svd(d.data(), rows, cols).s[0];
}

struct Compared {
  double worst_rel = 0, worst_excess = -1;
};

// Two projection steps on the CPU and the GPU from the same params; every matrix compared.
Compared compare_projection(const Config& cfg, const ParamTable& table0, const std::vector<float>& P0, double lr,
                            int64_t max_work_elems = CudaSpectral::kMaxWorkElems) {
  const ParamTable table = with_constraints(cfg, table0);
  std::vector<float> cpu = P0;
  SpectralState state;
  cuda::Stream stream;
  cuda::DeviceBuffer<float> d{std::span<const float>(P0)};
  cuda::DeviceBuffer<bf16> d_bf16(P0.size());
  d_bf16.zero(stream.get());
  CudaSpectral spec(cfg, table, stream.get(), max_work_elems);
  Compared out;
  for (int step = 1; step <= 2; ++step) {
    project_constrained(table, cpu, state, cfg, lr, step);
    spec.project(d.data(), d_bf16.data(), lr, step);
    stream.synchronize();
    const std::vector<float> gpu = d.download();
    const std::vector<bf16> gpu_bf16 = d_bf16.download();
    for (const auto& p : table.entries()) {
      if (!p.constrained && p.role != Role::embed) continue;
      for (int64_t s = 0; s < matrix_slices(p); ++s) {
        const auto g = slice_of(gpu, p, s), c = slice_of(cpu, p, s);
        const double rel = rel_diff(g, c);
        CAPTURE(p.name, s, step);
        out.worst_rel = std::max(out.worst_rel, rel);
        std::printf("  %-8s %-5s step %d %-24s slice %lld rel %.2e\n", cfg.spectral.method.c_str(),
                    cfg.spectral.precision.c_str(), step, p.name.c_str(), (long long)s, rel);
        if (p.constrained && cfg.spectral.method != "hammer") {
          const double w = sigma_bound(cfg.spectral, p.role, p.rows(), p.cols());
          out.worst_excess = std::max(out.worst_excess, sigma_1(g, int(p.rows()), int(p.cols())) / w - 1.0);
        }
      }
      // The bf16 working copy holds the projected weights.
      for (int64_t i = 0; i < p.numel; ++i) {
        const size_t k = size_t(p.offset + i);
        if (from_bf16(gpu_bf16[k]) != from_bf16(to_bf16(gpu[k]))) {
          FAIL("bf16 copy of " << p.name << " at " << i << " is stale");
        }
      }
    }
  }
  std::printf("%s %s: worst rel %.3e, worst sigma excess %.3e\n", cfg.spectral.method.c_str(),
              cfg.spectral.precision.c_str(), out.worst_rel, out.worst_excess);
  return out;
}

double rel_tol(const std::string& method, const std::string& precision) {
  if (method == "normalize" || method == "hammer") return 1e-5;
  if (method == "softcap") return precision == "fp32" ? 1e-6 : precision == "fp16" ? 2e-4 : 2e-3;
  return precision == "fp32" ? 2e-5 : precision == "fp16" ? 1e-2 : 5e-2;
}
double excess_tol(const std::string& method, const std::string& precision) {
  if (method == "normalize") return 1e-2;  // power iteration's under-estimate, not the precision
  return precision == "fp32" ? 1e-4 : precision == "fp16" ? 5e-3 : 3e-2;
}

std::vector<std::string> method_sets(const std::string& method, const std::string& precision) {
  return {"spectral.method=" + method, "spectral.w_max=1.0", "spectral.w_max_head=2.0", "spectral.precision=" + precision,
          "optim.kind=muon", "optim.lr=0.02", "optim.muon_lr=0.02", "optim.weight_decay=0.1", "spectral.power_iters=4"};
}

}  // namespace

TEST_CASE("cuda spectral: GemmRunner with fp32 and fp16 operands, strided batches, alpha and beta",
          "[gpu][spectral][gemm]") {
  // The in_type the spectral ops use. Tolerances: fp32 operands 1e-5 (plain fp32 FMA over K <= 96,
  // no TF32); fp16 operands 1e-4 (inputs rounded to fp16 first on both sides, products exact in
  // fp32: only the accumulation order differs).
  const uint64_t seed = 7000;
  CAPTURE(seed);
  Rng rng(seed);
  cuda::Stream stream;
  cuda::GemmRunner runner(stream.get());
  const int M = 40, N = 24, K = 96, batch = 3;
  for (int t = 0; t < 8; ++t) {
    const bool ta = t & 1, tb = t & 2, half = t & 4;
    CAPTURE(ta, tb, half);
    Vec A = randn(rng, int64_t(batch) * M * K), B = randn(rng, int64_t(batch) * K * N);
    const Vec C0 = randn(rng, int64_t(batch) * M * N);
    if (half) {
      for (auto& x : A) x = double(__half2float(__float2half_rn(float(x))));
      for (auto& x : B) x = double(__half2float(__float2half_rn(float(x))));
    }
    Vec ref(C0.size());
    for (int b = 0; b < batch; ++b)
      for (int i = 0; i < M; ++i)
        for (int j = 0; j < N; ++j) {
          double acc = 0;
          for (int k = 0; k < K; ++k) {
            const double a = ta ? A[size_t(b) * M * K + size_t(k) * M + i] : A[size_t(b) * M * K + size_t(i) * K + k];
            const double x = tb ? B[size_t(b) * K * N + size_t(j) * K + k] : B[size_t(b) * K * N + size_t(k) * N + j];
            acc += a * x;
          }
          const size_t o = size_t(b) * M * N + size_t(i) * N + j;
          ref[o] = 0.5 * acc - 0.25 * C0[o];
        }
    auto dC = upload_f32(C0);
    cuda::DeviceBuffer<float> dA32, dB32;
    cuda::DeviceBuffer<__half> dA16, dB16;
    cuda::GemmArgs g;
    if (half) {
      std::vector<__half> a(A.size()), b(B.size());
      for (size_t i = 0; i < A.size(); ++i) a[i] = __float2half_rn(float(A[i]));
      for (size_t i = 0; i < B.size(); ++i) b[i] = __float2half_rn(float(B[i]));
      dA16 = upload(a), dB16 = upload(b);
      g.A = dA16.data(), g.B = dB16.data(), g.in_type = cuda::InType::F16;
    } else {
      dA32 = upload_f32(A), dB32 = upload_f32(B);
      g.A = dA32.data(), g.B = dB32.data(), g.in_type = cuda::InType::F32;
    }
    g.M = M, g.N = N, g.K = K, g.trans_a = ta, g.trans_b = tb, g.C = dC.data(), g.alpha = 0.5f, g.beta = -0.25f;
    g.batch = batch, g.stride_a = int64_t(M) * K, g.stride_b = int64_t(K) * N, g.stride_c = int64_t(M) * N;
    runner.gemm(g);
    stream.synchronize();
    CHECK(rel_diff(download(dC), ref) < (half ? 1e-4 : 1e-5));
  }
}

TEST_CASE("cuda spectral: normalize, hammer and hardcap match project_constrained", "[gpu][spectral]") {
  for (std::string method : {"normalize", "hammer", "hardcap"})
    for (std::string precision : {"fp32", "fp16", "bf16"}) {
      if (method != "hardcap" && precision != "fp32") continue;  // power iteration is float64 whatever the precision
      const uint64_t seed = 7100 + precision.size() * 10 + method.size();
      CAPTURE(method, precision, seed);
      Rng rng(seed);
      const Config cfg = default_config(method_sets(method, precision));
      const ParamTable table = spectral_table(false);
      // Spectra from 3 w down to 0.3 w: the cap acts on the top third.
      const auto P = spectral_params(table, rng, [&](const ParamInfo& p) {
        return 3.0 * sigma_bound(cfg.spectral, p.role, p.rows(), p.cols());
      });
      const Compared c = compare_projection(cfg, table, P, 0.02);
      CHECK(c.worst_rel < rel_tol(method, precision));
      if (method != "hammer") CHECK(c.worst_excess < excess_tol(method, precision));
    }
}

TEST_CASE("cuda spectral: softcap matches project_constrained and holds w under its coupling", "[gpu][spectral]") {
  for (std::string precision : {"fp32", "fp16", "bf16"}) {
    const uint64_t seed = 7200 + precision.size();
    CAPTURE(precision, seed);
    Rng rng(seed);
    const double lr = 0.02;
    const Config cfg = default_config(method_sets("softcap", precision));
    const ParamTable table = with_constraints(cfg, spectral_table(false));
    // Spectra up to 0.98 k: the inputs the coupling guarantees to bring under w.
    const auto P = spectral_params(table, rng, [&](const ParamInfo& p) {
      const double w = sigma_bound(cfg.spectral, p.role, p.rows(), p.cols());
      const double wd = p.weight_decay ? cfg.optim.weight_decay : 0.0;
      return 0.98 * softcap_bound_k(w, lr, wd, muon_update_spectral_bound(cfg, p.rows(), p.cols(), lr));
    });
    const Compared c = compare_projection(cfg, table, P, lr);
    CHECK(c.worst_rel < rel_tol("softcap", precision));
    CHECK(c.worst_excess < excess_tol("softcap", precision));
  }
}

TEST_CASE("cuda spectral: shape groups split into chunks give the same projections", "[gpu][spectral]") {
  // One slice per chunk: every batched path runs with chunk offsets > 0.
  for (std::string method : {"softcap", "hardcap", "normalize"}) {
    const uint64_t seed = 7250 + method.size();
    CAPTURE(method, seed);
    Rng rng(seed);
    const Config cfg = default_config(method_sets(method, "fp32"));
    const ParamTable table = spectral_table(false);
    const auto P = spectral_params(table, rng, [&](const ParamInfo& p) {
      return 1.2 * sigma_bound(cfg.spectral, p.role, p.rows(), p.cols());
    });
    const Compared c = compare_projection(cfg, table, P, 0.02, 1);
    CHECK(c.worst_rel < rel_tol(method, "fp32"));
  }
}

TEST_CASE("cuda spectral: the lipschitz variant's embedding max-norm", "[gpu][spectral]") {
  const uint64_t seed = 7300;
  CAPTURE(seed);
  Rng rng(seed);
  const Config cfg = default_config({"model.variant=lipschitz", "model.norm=none", "model.bias=false",
                                     "model.tie_embeddings=false", "spectral.method=normalize"});
  const ParamTable table = spectral_table(true);
  const auto P = spectral_params(table, rng, [](const ParamInfo&) { return 2.0; });
  const Compared c = compare_projection(cfg, table, P, 0.01);
  CHECK(c.worst_rel < 1e-5);
  // Every row of wte at RMS <= 1 (the random rows have RMS ~1.5, so most were scaled).
  cuda::Stream stream;
  std::vector<float> cpu = P;
  SpectralState state;
  project_constrained(with_constraints(cfg, table), cpu, state, cfg, 0.01, 1);
  const ParamInfo& e = *table.find("wte.weight");
  for (int64_t r = 0; r < e.rows(); ++r) {
    double ss = 0;
    for (int64_t j = 0; j < e.cols(); ++j) ss += double(cpu[size_t(e.offset + r * e.cols() + j)]) * cpu[size_t(e.offset + r * e.cols() + j)];
    CHECK(std::sqrt(ss / double(e.cols())) <= 1.0 + 1e-6);
  }
}

TEST_CASE("cuda spectral: monitor records and certificate match spectral_monitor_lines", "[gpu][spectral]") {
  for (std::string precision : {"fp32", "fp16", "bf16"})
  for (std::string method : {"ns3-accurate", "ns5-fast", "power"}) {
    if (method == "power" && precision != "fp32") continue;  // float64 whatever the precision
    const uint64_t seed = 7400;
    CAPTURE(method, precision, seed);
    const Config cfg = default_config({"model.variant=lipschitz", "model.norm=none", "model.bias=false",
                                       "model.tie_embeddings=false", "model.n_layer=2", "model.n_head=2",
                                       "model.d_model=64", "model.vocab_size=320", "model.seq_len=16",
                                       "spectral.method=hardcap", "spectral.monitor_every=1",
                                       "spectral.monitor_method=" + method, "spectral.monitor_iters=40",
                                       "spectral.monitor_filter=h.*,lm_head.weight", "spectral.precision=" + precision});
    const ParamTable table = with_constraints(cfg, build_gpt_params(cfg));
    std::vector<float> P(size_t(table.total()), 0.f);
    init_gpt_params(cfg, table, P, seed);
    const auto cpu = spectral_monitor_lines(cfg, table, P, 5);
    cuda::Stream stream;
    cuda::DeviceBuffer<float> d{std::span<const float>(P)};
    CudaSpectral spec(cfg, table, stream.get());
    const auto gpu = spec.monitor_lines(d.data(), 5);
    REQUIRE(gpu.size() == cpu.size());
    REQUIRE(cpu.size() > 2);
    double worst = 0;
    for (size_t i = 0; i < cpu.size(); ++i) {
      CAPTURE(cpu[i].dump());
      CHECK(gpu[i]["step"] == cpu[i]["step"]);
      if (cpu[i].contains("certificate")) {
        const double a = gpu[i]["certificate"]["log10_lipschitz_bound"], b = cpu[i]["certificate"]["log10_lipschitz_bound"];
        CHECK(std::abs(a - b) <= 1e-6 * std::max(1.0, std::abs(b)));
        CHECK(gpu[i]["certificate"]["log10_lipschitz_bound_wmax"] == cpu[i]["certificate"]["log10_lipschitz_bound_wmax"]);
        continue;
      }
      CHECK(gpu[i]["name"] == cpu[i]["name"]);
      CHECK(gpu[i]["method"] == cpu[i]["method"]);
      const double a = gpu[i]["sigma_max"], b = cpu[i]["sigma_max"];
      worst = std::max(worst, std::abs(a - b) / b);
    }
    std::printf("monitor %s %s: worst relative difference of sigma_max %.3e\n", method.c_str(), precision.c_str(),
                worst);
    CHECK(worst < (precision == "fp32" ? 1e-4 : precision == "fp16" ? 1e-2 : 5e-2));
  }
}

TEST_CASE("cuda spectral: power vectors round-trip through download_state / upload_state", "[gpu][spectral]") {
  const uint64_t seed = 7500;
  CAPTURE(seed);
  Rng rng(seed);
  const Config cfg = default_config(method_sets("normalize", "fp32"));
  const ParamTable table = with_constraints(cfg, spectral_table(false));
  const auto P = spectral_params(table, rng, [](const ParamInfo&) { return 3.0; });
  cuda::Stream stream;
  cuda::DeviceBuffer<float> d{std::span<const float>(P)};
  CudaSpectral a(cfg, table, stream.get());
  a.project(d.data(), nullptr, 0.02, 1);
  // The vectors equal the CPU's after one step, under the CPU's names and shapes.
  std::vector<float> cpu = P;
  SpectralState state;
  project_constrained(table, cpu, state, cfg, 0.02, 1);
  const auto views = a.download_state();
  const auto refs = state.tensor_refs(table);
  REQUIRE(views.size() == refs.size());
  for (size_t i = 0; i < views.size(); ++i) {
    CAPTURE(views[i].name);
    CHECK(views[i].name == refs[i].name);
    CHECK(views[i].shape == refs[i].shape);
    const auto* ref = static_cast<const float*>(refs[i].data);
    CHECK(rel_diff(std::vector<float>(views[i].data, views[i].data + views[i].numel),
                   std::vector<float>(ref, ref + views[i].numel)) < 1e-5);
  }
  // A fresh object given those vectors continues exactly as the original (warm: power_iters only).
  const std::vector<float> after1 = d.download();
  cuda::DeviceBuffer<float> d2{std::span<const float>(after1)};
  CudaSpectral b(cfg, table, stream.get());
  auto bviews = b.download_state();
  REQUIRE(bviews.size() == views.size());
  for (size_t i = 0; i < views.size(); ++i) std::copy(views[i].data, views[i].data + views[i].numel, bviews[i].data);
  b.upload_state();
  // Perturb so that the second step projects again, the same on both.
  std::vector<float> bumped = after1;
  for (auto& x : bumped) x *= 1.5f;
  d.upload(bumped), d2.upload(bumped);
  a.project(d.data(), nullptr, 0.02, 2);
  b.project(d2.data(), nullptr, 0.02, 2);
  CudaSpectral cold(cfg, table, stream.get());
  cuda::DeviceBuffer<float> d3{std::span<const float>(bumped)};
  cold.project(d3.data(), nullptr, 0.02, 2);
  stream.synchronize();
  CHECK(d.download() == d2.download());
  CHECK(d3.download() != d.download());  // a cold start runs 20 more iterations: a different estimate
}
