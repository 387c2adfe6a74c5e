#include "optim/adamw.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"

#include <spdlog/fmt/fmt.h>

namespace pg {

AdamW::AdamW(const OptimConfig& cfg, const ParamTable& table, std::vector<ElementRange> owned)
    : cfg_(cfg), table_(&table), owned_(std::move(owned)) {
  if (owned_.empty()) owned_.push_back({0, table.total()});
  int64_t n = 0;
  for (const auto& r : owned_) n += r.size();
  m_.assign(size_t(n), 0.0f);
  v_.assign(size_t(n), 0.0f);
}

void AdamW::step(std::span<float> params, std::span<const float> grads, double lr_factor, int64_t t) {
  const double lr = cfg_.lr * lr_factor;
  const double b1 = cfg_.beta1, b2 = cfg_.beta2;
  const double c1 = 1.0 - std::pow(b1, double(t)), c2 = 1.0 - std::pow(b2, double(t));
  const float fb1 = float(b1), fb2 = float(b2);
  const float step_size = float(lr / c1), inv_sqrt_c2 = float(1.0 / std::sqrt(c2)), eps = float(cfg_.eps);
  int64_t base = 0;  // where the current range's moments start in m_, v_
  for (const auto& r : owned_) {
    for (const auto& p : table_->entries()) {
      const int64_t lo = std::max(r.begin, p.offset), hi = std::min(r.end, p.offset + p.numel);
      if (p.muon || lo >= hi) continue;
      const float decay = p.weight_decay ? float(1.0 - lr * cfg_.weight_decay) : 1.0f;
      float* w = params.data() + lo;
      const float* g = grads.data() + lo;
      float* m = m_.data() + base + (lo - r.begin);
      float* v = v_.data() + base + (lo - r.begin);
      for (int64_t i = 0; i < hi - lo; ++i) {
        m[i] = fb1 * m[i] + (1.0f - fb1) * g[i];
        v[i] = fb2 * v[i] + (1.0f - fb2) * g[i] * g[i];
        w[i] = w[i] * decay - step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_c2 + eps);
      }
    }
    base += r.size();
  }
}

std::vector<StateTensor> AdamW::state() {
  PG_CHECK(owned_.size() == 1 && owned_[0].begin == 0 && owned_[0].end >= table_->total(),
           "AdamW::state: moments in the compact (ZeRO-1) layout have no per-parameter views");
  return adamw_state(*table_, m_.data(), v_.data());
}

std::vector<StateTensor> adamw_state(const ParamTable& table, float* m, float* v) {
  std::vector<StateTensor> out;
  for (const auto& p : table.entries())
    if (!p.muon) out.push_back({p.name + ".exp_avg", p.shape, m + p.offset, p.numel});
  for (const auto& p : table.entries())
    if (!p.muon) out.push_back({p.name + ".exp_avg_sq", p.shape, v + p.offset, p.numel});
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
