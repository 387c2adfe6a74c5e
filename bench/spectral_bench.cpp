// Spectral projection and monitor cost on GPT-2 124M's constrained matrices
// (configs/lipschitz-gpt2.json: 48 attention matrices 768x768, 12 + 12 MLP 3072x768 / 768x3072,
// the untied head 50304x768), side by side with the GPT-2 124M training step measured in the same
// process (CudaGpt forward + backward + AdamW at batch B, T 1024, as bench/gpt_step_bench.cpp).
// Per method and spectral.precision: the median time of CudaSpectral::project over `reps` calls
// (after 2 warm-up calls), as ms and as % of (a) one micro-step at batch B and (b) the config's
// optimizer step (train.grad_accum micro-steps: the projection runs once per optimizer step).
// The monitor (the config's ns5-fast x monitor_iters over every matrix, plus the certificate) runs
// every spectral.monitor_every steps: its time is shown whole and per step.
//   usage: spectral_bench [B=32] [reps=10] [config=configs/lipschitz-gpt2.json]
// scripts/bench_spectral.sh runs it.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "backend/cuda/device.hpp"
#include "bench/gpt2_step.hpp"
#include "config/config.hpp"
#include "core/rng.hpp"
#include "kernels/adamw.cuh"
#include "model/cuda_gpt.hpp"
#include "model/gpt.hpp"
#include "spectral/constrain.hpp"
#include "spectral/cuda_constrain.hpp"

using namespace pg;

namespace {

float median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// GPT-2 124M training step (llm.c's configuration), median ms over `steps` after 3 warm-up steps.
float gpt2_step_ms(int B, int steps) { return bench::Gpt2Step(B).median_ms(steps, 3); }

}  // namespace

int main(int argc, char** argv) {
  if (cuda::device_count() == 0) {
    std::printf("spectral_bench: skipped: no CUDA device\n");
    return 0;
  }
  const int B = argc > 1 ? std::atoi(argv[1]) : 32, reps = argc > 2 ? std::atoi(argv[2]) : 10;
  const std::string path = argc > 3 ? argv[3] : "configs/lipschitz-gpt2.json";
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));

  const float step_ms = gpt2_step_ms(B, 10);
  const Config base = load_config(path);
  const int accum = base.train.grad_accum;
  const double opt_step_ms = double(step_ms) * accum;
  std::printf("spectral_bench on %s: GPT-2 124M step B=%d T=1024: %.2f ms (micro-step); optimizer step of %s "
              "(grad_accum %d): %.1f ms\n",
              prop.name, B, step_ms, path.c_str(), accum, opt_step_ms);

  const ParamTable table = with_constraints(base, build_gpt_params(base));
  std::vector<float> host(size_t(table.total()), 0.f);
  init_gpt_params(base, table, host, 3);
  int n_constrained = 0;
  int64_t n_elems = 0;
  for (const auto& p : table.entries())
    if (p.constrained) ++n_constrained, n_elems += p.numel;
  std::printf("constrained matrices: %d (%.1fM weights)\n", n_constrained, double(n_elems) / 1e6);
  cuda::Stream stream;
  cuda::DeviceBuffer<float> d{std::span<const float>(host)};
  cuda::DeviceBuffer<kernels::bf16> d_bf16(host.size());

  struct Case {
    std::string method, precision, roles;  // roles empty: the config's
  };
  // The last two split the hard cap into the hidden matrices and the head (Gram form, fp32).
  const std::vector<Case> cases = {{"normalize", "fp32", ""}, {"hammer", "fp32", ""},  {"softcap", "fp32", ""},
                                   {"softcap", "fp16", ""},   {"softcap", "bf16", ""}, {"hardcap", "fp32", ""},
                                   {"hardcap", "fp16", ""},   {"hardcap", "bf16", ""}, {"hardcap", "fp16", "attn,mlp"},
                                   {"hardcap", "fp16", "head"}};
  std::printf("%-10s %-5s %-14s %10s %12s %14s %10s\n", "method", "prec", "roles", "ms", "%micro-step", "%optim-step",
              "work_MiB");
  for (const Case& c : cases) {
    Config cfg = base;
    apply_override(cfg, "spectral.method=" + c.method);
    apply_override(cfg, "spectral.precision=" + c.precision);
    if (!c.roles.empty()) apply_override(cfg, "spectral.roles=" + c.roles);
    if (c.method == "softcap") apply_override(cfg, "optim.kind=muon");
    d.upload(host);
    CudaSpectral spec(cfg, table, stream.get());
    const double lr = cfg.optim.lr;
    std::vector<float> ms;
    for (int r = 0; r < 2 + reps; ++r) {
      cuda::Event start, stop;
      start.record(stream.get());
      spec.project(d.data(), d_bf16.data(), lr, r + 1);
      stop.record(stream.get());
      stop.synchronize();
      if (r >= 2) ms.push_back(stop.elapsed_ms_since(start));
    }
    const float t = median(ms);
    const std::string roles = cfg.spectral.roles;
    std::printf("%-10s %-5s %-14s %10.2f %12.2f %14.3f %10.0f\n", c.method.c_str(), c.precision.c_str(), roles.c_str(),
                t, 100.0 * t / step_ms, 100.0 * t / opt_step_ms, double(spec.workspace_bytes()) / (1 << 20));
    std::printf("result method=%s precision=%s roles=%s ms=%.3f pct_micro=%.3f pct_optim=%.4f gpu=\"%s\"\n",
                c.method.c_str(), c.precision.c_str(), roles.c_str(), t, 100.0 * t / step_ms, 100.0 * t / opt_step_ms,
                prop.name);
  }

  // The monitor as configured (method, iterations, filter) at each precision, and the certificate.
  for (std::string precision : {"fp32", "fp16", "bf16"}) {
    Config cfg = base;
    apply_override(cfg, "spectral.precision=" + precision);
    if (cfg.spectral.monitor_every <= 0) apply_override(cfg, "spectral.monitor_every=100");
    CudaSpectral spec(cfg, table, stream.get());
    std::vector<float> ms, cert_ms;
    size_t lines = 0;
    for (int r = 0; r < 4; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      lines = spec.monitor_lines(d.data(), r).size();
      const auto t1 = std::chrono::steady_clock::now();
      spec.certificate(d.data());
      const auto t2 = std::chrono::steady_clock::now();
      if (r >= 1) {
        ms.push_back(std::chrono::duration<float, std::milli>(t1 - t0).count());
        cert_ms.push_back(std::chrono::duration<float, std::milli>(t2 - t1).count());
      }
    }
    const float t = median(ms);
    const int every = cfg.spectral.monitor_every;
    std::printf("monitor %s x %d iters, %s: %.2f ms per call (%zu lines, incl. certificate %.2f ms); every %d optimizer "
                "steps: %.3f ms/step = %.4f%% of the optimizer step\n",
                cfg.spectral.monitor_method.c_str(), cfg.spectral.monitor_iters, precision.c_str(), t, lines,
                median(cert_ms), every, t / every, 100.0 * t / every / opt_step_ms);
    std::printf("result method=monitor-%s precision=%s ms=%.3f per_step_ms=%.4f pct_optim=%.4f gpu=\"%s\"\n",
                cfg.spectral.monitor_method.c_str(), precision.c_str(), t, t / every, 100.0 * t / every / opt_step_ms,
                prop.name);
  }
  return 0;
}
