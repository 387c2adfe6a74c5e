// Whole-model gradient checking for CpuGpt<double>: every parameter tensor's hand-written
// gradient against central finite differences of the training objective (the mean cross-entropy
// plus, for MoE models, the weighted router losses of CpuGpt::moe_objective()).
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "core/rng.hpp"
#include "model/cpu_gpt.hpp"
#include "model/gpt.hpp"

namespace pg::test {

inline Config tiny_model(const std::vector<std::string>& sets) {
  std::vector<std::string> all = {"model.n_layer=2", "model.n_head=2", "model.d_model=8", "model.d_ff=12",
                                  "model.vocab_size=13", "model.seq_len=5"};
  all.insert(all.end(), sets.begin(), sets.end());
  return default_config(all);
}

// A 2-layer model small enough to check every parameter element, with `sets` applied on top.
// Returns the worst per-tensor relative error ||analytic - numeric|| / ||numeric||.
inline double worst_grad_error(const Config& cfg, uint64_t seed, std::string* worst_name) {
  const ParamTable table = build_gpt_params(cfg);
  Rng rng(seed);
  std::vector<double> P(size_t(table.total()), 0.0), G(size_t(table.total()), 0.0);
  for (const auto& p : table.entries())  // large random values so every nonlinearity is exercised
    for (int64_t i = 0; i < p.numel; ++i)
      P[size_t(p.offset + i)] = p.role == Role::norm ? 1.0 + 0.3 * rng.normal() : 0.4 * rng.normal();
  const int B = 2, T = cfg.model.seq_len, V = cfg.model.vocab_size;
  std::vector<int32_t> x(static_cast<size_t>(B * T)), y(static_cast<size_t>(B * T));
  for (auto& t : x) t = int32_t(rng.below(uint64_t(V)));
  for (auto& t : y) t = int32_t(rng.below(uint64_t(V)));

  CpuGpt<double> model(cfg, table, B);
  auto objective = [&] { return model.forward(P.data(), x.data(), y.data(), B, T) + model.moe_objective(); };
  objective();
  model.backward(P.data(), G.data(), 1.0);

  double worst = 0.0;
  const double h = 1e-6;
  for (const auto& p : table.entries()) {
    double num2 = 0.0, diff2 = 0.0;
    for (int64_t i = 0; i < p.numel; ++i) {
      double& w = P[size_t(p.offset + i)];
      const double w0 = w;
      w = w0 + h;
      const double lp = objective();
      w = w0 - h;
      const double lm = objective();
      w = w0;
      const double num = (lp - lm) / (2 * h);
      const double ana = G[size_t(p.offset + i)];
      num2 += num * num;
      diff2 += (num - ana) * (num - ana);
    }
    // Absolute floor: some gradients are exactly zero (the k bias shifts every score of a query
    // row equally, which softmax ignores), where a relative error would only measure FD noise.
    // Such tensors (||numeric|| < 1e-6) are held to an absolute 1e-7 instead, reported scaled to 1e-6.
    const double rel = std::sqrt(num2) < 1e-6 ? std::sqrt(diff2) * 10.0 : std::sqrt(diff2) / std::sqrt(num2);
    if (rel > worst) {
      worst = rel;
      if (worst_name) *worst_name = p.name;
    }
  }
  return worst;
}

}  // namespace pg::test
