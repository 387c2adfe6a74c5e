// Per-parameter spectral projection after each optimizer step (see constrain.hpp).
#include "spectral/constrain.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/error.hpp"
#include "optim/muon.hpp"
#include "optim/newton_schulz.hpp"
#include "spectral/gram_hardcap.hpp"
#include "spectral/power_iteration.hpp"
#include "spectral/projection.hpp"

namespace pg {

bool role_constrained(const SpectralConfig& s, Role role) {
  std::stringstream ss(s.roles);
  for (std::string r; std::getline(ss, r, ',');)
    if (r == role_name(role)) return true;
  return false;
}

void mark_constrained(const Config& cfg, ParamTable& table) {
  const bool on = cfg.spectral.method != "none";
  for (auto& p : table.entries()) p.constrained = on && p.is_matrix() && role_constrained(cfg.spectral, p.role);
}

double sigma_bound(const SpectralConfig& s, Role role, int64_t rows, int64_t cols) {
  double w = 0.0;
  switch (role) {
    case Role::attn: w = s.w_max_attn; break;
    case Role::mlp: w = s.w_max_mlp; break;
    case Role::expert: w = s.w_max_expert; break;
    case Role::head: w = s.w_max_head; break;
    default: break;
  }
  if (!(w > 0.0)) w = s.w_max;
  return s.norm == "rms" ? w * std::sqrt(double(rows) / double(cols)) : w;
}

int64_t matrix_slices(const ParamInfo& p) { return p.numel / (p.rows() * p.cols()); }

double muon_update_spectral_bound(const Config& cfg, int64_t rows, int64_t cols, double lr) {
  // lr is the scheduled AdamW lr (optim.lr x schedule factor); Muon's own peak is optim.muon_lr.
  // An update is lr_muon x scale x NS(M), and NS(M)'s singular values are at most the schedule's
  // largest output on (0, 1].
  const double muon_lr = lr * cfg.optim.muon_lr / cfg.optim.lr;
  const auto sched = muon_ns_schedule(cfg.optim);
  return muon_lr * muon_update_scale(cfg.optim.muon_scale, rows, cols) * ns_schedule_max_output(sched);
}

SpectralState::Vecs& SpectralState::at(const ParamInfo& p) {
  Vecs& e = vecs_[p.name];
  const size_t n = size_t(matrix_slices(p));
  if (e.u.size() != n * size_t(p.rows())) e.u.assign(n * size_t(p.rows()), 0.0f);
  if (e.v.size() != n * size_t(p.cols())) e.v.assign(n * size_t(p.cols()), 0.0f);
  return e;
}

float* SpectralState::u(const ParamInfo& p, int64_t slice) { return at(p).u.data() + slice * p.rows(); }
float* SpectralState::v(const ParamInfo& p, int64_t slice) { return at(p).v.data() + slice * p.cols(); }

bool SpectralState::warm(const ParamInfo& p) const {
  const auto it = vecs_.find(p.name);
  if (it == vecs_.end()) return false;
  return std::any_of(it->second.v.begin(), it->second.v.end(), [](float x) { return x != 0.0f; });
}

std::vector<io::TensorRef> SpectralState::tensor_refs(const ParamTable& table) const {
  std::vector<io::TensorRef> refs;
  for (const auto& p : table.entries()) {
    const auto it = vecs_.find(p.name);
    if (!p.constrained || it == vecs_.end()) continue;
    const int64_t n = matrix_slices(p);
    refs.push_back({p.name + ".power_u", "F32", {n, p.rows()}, it->second.u.data(), it->second.u.size() * sizeof(float)});
    refs.push_back({p.name + ".power_v", "F32", {n, p.cols()}, it->second.v.data(), it->second.v.size() * sizeof(float)});
  }
  return refs;
}

void SpectralState::load(const io::SafetensorsReader& r, const ParamTable& table) {
  vecs_.clear();
  for (const auto& p : table.entries()) {
    if (!p.constrained || !r.has(p.name + ".power_u") || !r.has(p.name + ".power_v")) continue;
    Vecs& e = at(p);
    const int64_t n = matrix_slices(p);
    const std::vector<int64_t> su = {n, p.rows()}, sv = {n, p.cols()};
    r.read_into(p.name + ".power_u", e.u.data(), "F32", su);
    r.read_into(p.name + ".power_v", e.v.data(), "F32", sv);
  }
}

void max_norm_rows(float* E, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i) {
    float* e = E + i * cols;
    double ss = 0.0;
    for (int64_t j = 0; j < cols; ++j) ss += double(e[j]) * e[j];
    const double rms = std::sqrt(ss / double(cols));
    if (rms > 1.0) {
      const float s = float(1.0 / rms);
      for (int64_t j = 0; j < cols; ++j) e[j] *= s;
    }
  }
}

void project_constrained(const ParamTable& table, std::span<float> params, SpectralState& state, const Config& cfg,
                         double lr, int64_t step) {
  const SpectralConfig& s = cfg.spectral;
  if (cfg.model.variant == "lipschitz")
    for (const auto& p : table.entries())
      if (p.role == Role::embed || p.role == Role::pos_embed) max_norm_rows(params.data() + p.offset, p.rows(), p.cols());
  if (s.method == "none") return;
  for (const auto& p : table.entries()) {
    if (!p.constrained) continue;
    const int rows = int(p.rows()), cols = int(p.cols());
    const double w = sigma_bound(s, p.role, rows, cols);
    const int64_t slices = matrix_slices(p);
    float* W0 = params.data() + p.offset;
    if (s.method == "hardcap") {
      if (std::max(rows, cols) >= kGramHardcapAspect * std::min(rows, cols))
        for (int64_t i = 0; i < slices; ++i) spectral_hardcap_gram(W0 + i * rows * cols, rows, cols, w);
      else
        spectral_hardcap(W0, int(slices), rows, cols, w);
      continue;
    }
    if (s.method == "softcap") {
      const double wd = p.weight_decay ? cfg.optim.weight_decay : 0.0;
      const double k = softcap_bound_k(w, lr, wd, muon_update_spectral_bound(cfg, rows, cols, lr));
      if (k > softcap_max_k(w))
        throw UserError("spectral.method = softcap: at step " + std::to_string(step) + " the update bound of " + p.name +
                        " exceeds what the soft cap can hold (k > 2.61 w_max); lower optim.lr or raise spectral.w_max");
      spectral_softcap(W0, int(slices), rows, cols, softcap_alpha(k, w));
      continue;
    }
    // normalize / hammer: power iteration per slice.
    const bool cold = !s.warm_start || !state.warm(p);
    const int iters = s.power_iters + (cold ? kColdStartIters : 0);
    for (int64_t i = 0; i < slices; ++i) {
      float* W = W0 + i * rows * cols;
      float* u = state.u(p, i);
      float* v = state.v(p, i);
      if (!s.warm_start) std::fill(v, v + cols, 0.0f);
      const double sigma = power_iteration(W, rows, cols, u, v, iters);
      if (s.method == "normalize") spectral_normalize(W, rows, cols, sigma, w);
      else spectral_hammer(W, rows, cols, u, v, sigma, w);
    }
  }
}

}  // namespace pg
