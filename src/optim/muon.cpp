#include "optim/muon.hpp"

#include <algorithm>
#include <cmath>

#include <spdlog/fmt/fmt.h>

#include "core/error.hpp"

namespace pg {

double muon_update_scale(const std::string& rule, int64_t rows, int64_t cols) {
  if (rule == "keller") return std::sqrt(std::max(1.0, double(rows) / double(cols)));
  if (rule == "moonlight") return 0.2 * std::sqrt(double(std::max(rows, cols)));
  throw UserError("optim.muon_scale: expected keller or moonlight, got '" + rule + "'");
}

double muon_ns_safety(NsPrecision precision) { return precision == NsPrecision::fp16 ? 1.02 : 1.01; }

std::vector<NsCoeffs> muon_ns_schedule(const OptimConfig& cfg) {
  const NsPrecision precision = parse_ns_precision(cfg.ns_precision, "optim.ns_precision");
  return ns_schedule(cfg.ns_schedule, cfg.ns_steps, muon_ns_safety(precision));
}

namespace {

struct MatrixList {
  std::vector<int64_t> offsets;
  std::vector<MatrixShape> shapes;
  std::vector<bool> decays;
};

MatrixList muon_matrices(const ParamTable& table) {
  MatrixList l;
  for (const auto& p : table.entries()) {
    if (!p.muon) continue;
    PG_CHECK(p.is_matrix(), "Muon: " + p.name + " is not a matrix");
    const int64_t rows = p.rows(), cols = p.cols(), per = rows * cols;
    for (int64_t e = 0; e < p.numel / per; ++e) {  // leading dimensions (experts) = separate matrices
      l.offsets.push_back(p.offset + e * per);
      l.shapes.push_back({int(rows), int(cols)});
      l.decays.push_back(p.weight_decay);
    }
  }
  return l;
}

}  // namespace

Muon::Muon(const OptimConfig& cfg, const ParamTable& table, NsSplitFn ns_split)
    : cfg_(cfg),
      table_(&table),
      momentum_(size_t(table.total()), 0.0f),
      direction_(size_t(table.total()), 0.0f),
      precision_(parse_ns_precision(cfg.ns_precision, "optim.ns_precision")),
      safety_(muon_ns_safety(precision_)),
      ns_(muon_matrices(table).shapes),
      shapes_(muon_matrices(table).shapes),
      ns_split_(std::move(ns_split)) {
  if (!(cfg.muon_momentum >= 0.0 && cfg.muon_momentum < 1.0))
    throw UserError("optim.muon_momentum: expected a value in [0, 1), got " + fmt::format("{}", cfg.muon_momentum));
  if (!(cfg.muon_lr > 0.0)) throw UserError("optim.muon_lr: expected a value > 0, got " + fmt::format("{}", cfg.muon_lr));
  muon_update_scale(cfg.muon_scale, 1, 1);  // validates the rule name
  schedule_ = muon_ns_schedule(cfg);
  const MatrixList l = muon_matrices(table);
  for (size_t i = 0; i < l.offsets.size(); ++i) {
    matrices_.push_back({l.offsets[i], l.shapes[i].rows, l.shapes[i].cols, l.decays[i] ? 1.0f : 0.0f});
    direction_ptrs_.push_back(direction_.data() + l.offsets[i]);
  }
}

void Muon::step(std::span<float> params, std::span<const float> grads, double lr_factor, int64_t /*t*/) {
  const float mu = float(cfg_.muon_momentum), one_minus_mu = 1.0f - mu;
  const bool nesterov = cfg_.muon_nesterov;
  for (const Matrix& x : matrices_) {
    const size_t n = size_t(x.rows) * size_t(x.cols);
    const float* g = grads.data() + x.offset;
    float* b = momentum_.data() + x.offset;
    float* d = direction_.data() + x.offset;
    for (size_t i = 0; i < n; ++i) {
      b[i] = mu * b[i] + one_minus_mu * g[i];
      d[i] = nesterov ? one_minus_mu * g[i] + mu * b[i] : b[i];
    }
  }
  if (ns_split_) {
    ns_split_(direction_ptrs_, shapes_, [this](std::span<float* const> mats, std::span<const MatrixShape> shapes) {
      NsGroups(shapes).run(mats, schedule_, precision_, safety_);
    });
  } else {
    ns_.run(direction_ptrs_, schedule_, precision_, safety_);
  }
  const double lr = cfg_.muon_lr * lr_factor;
  for (const Matrix& x : matrices_) {
    const size_t n = size_t(x.rows) * size_t(x.cols);
    const float decay = float(1.0 - lr * cfg_.weight_decay * x.decay_scale);
    const float step = float(lr * muon_update_scale(cfg_.muon_scale, x.rows, x.cols));
    float* w = params.data() + x.offset;
    const float* o = direction_.data() + x.offset;
    for (size_t i = 0; i < n; ++i) w[i] = w[i] * decay - step * o[i];
  }
}

std::vector<StateTensor> Muon::state() {
  std::vector<StateTensor> out;
  for (const auto& p : table_->entries())
    if (p.muon) out.push_back({p.name + ".momentum_buffer", p.shape, momentum_.data() + p.offset, p.numel});
  return out;
}

std::vector<std::string> Muon::describe() const {
  int tensors = 0;
  int64_t n = 0;
  for (const auto& p : table_->entries())
    if (p.muon) ++tensors, n += p.numel;
  std::string groups;
  for (const auto& g : ns_.groups())
    groups += fmt::format("{}{} x {}x{}", groups.empty() ? "" : ", ", g.members.size(), g.m, g.n);
  return {fmt::format(
      "muon: {} tensors, {} matrices, {} parameters (lr {:g}, momentum {:g}{}, scale {}, NS {} x{} {}); "
      "{} shape groups: {}",
      tensors, matrices_.size(), n, cfg_.muon_lr, cfg_.muon_momentum, cfg_.muon_nesterov ? " nesterov" : "",
      cfg_.muon_scale, cfg_.ns_schedule, cfg_.ns_steps, cfg_.ns_precision, ns_.groups().size(),
      groups.empty() ? "none" : groups)};
}

}  // namespace pg
