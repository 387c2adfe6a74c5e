#include "optim/adamw.hpp"

#include <cmath>

#include <spdlog/fmt/fmt.h>

namespace pg {

AdamW::AdamW(const OptimConfig& cfg, const ParamTable& table)
    : cfg_(cfg), table_(&table), m_(size_t(table.total()), 0.0f), v_(size_t(table.total()), 0.0f) {}

void AdamW::step(std::span<float> params, std::span<const float> grads, double lr_factor, int64_t t) {
  const double lr = cfg_.lr * lr_factor;
  const double b1 = cfg_.beta1, b2 = cfg_.beta2;
  const double c1 = 1.0 - std::pow(b1, double(t)), c2 = 1.0 - std::pow(b2, double(t));
  const float fb1 = float(b1), fb2 = float(b2);
  const float step_size = float(lr / c1), inv_sqrt_c2 = float(1.0 / std::sqrt(c2)), eps = float(cfg_.eps);
  for (const auto& p : table_->entries()) {
    if (p.muon) continue;
    const float decay = p.weight_decay ? float(1.0 - lr * cfg_.weight_decay) : 1.0f;
    float* w = params.data() + p.offset;
    const float* g = grads.data() + p.offset;
    float* m = m_.data() + p.offset;
    float* v = v_.data() + p.offset;
    for (int64_t i = 0; i < p.numel; ++i) {
      m[i] = fb1 * m[i] + (1.0f - fb1) * g[i];
      v[i] = fb2 * v[i] + (1.0f - fb2) * g[i] * g[i];
      w[i] = w[i] * decay - step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_c2 + eps);
    }
  }
}

std::vector<StateTensor> AdamW::state() {
  std::vector<StateTensor> out;
  for (const auto& p : table_->entries())
    if (!p.muon) out.push_back({p.name + ".exp_avg", p.shape, m_.data() + p.offset, p.numel});
  for (const auto& p : table_->entries())
    if (!p.muon) out.push_back({p.name + ".exp_avg_sq", p.shape, v_.data() + p.offset, p.numel});
  return out;
}

std::vector<std::string> AdamW::describe() const {
  int tensors = 0;
  int64_t n = 0;
  for (const auto& p : table_->entries())
    if (!p.muon) ++tensors, n += p.numel;
  return {fmt::format("adamw: {} tensors, {} parameters (lr {:g}, betas {:g}/{:g}, weight decay {:g})", tensors, n,
                     cfg_.lr, cfg_.beta1, cfg_.beta2, cfg_.weight_decay)};
}

double global_grad_norm(std::span<const float> grads) {
  double s = 0.0;
  for (float g : grads) s += double(g) * double(g);
  return std::sqrt(s);
}

}  // namespace pg
