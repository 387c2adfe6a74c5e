#include "model/moe_balance.hpp"

#include <algorithm>
#include <string>

#include "core/error.hpp"

namespace pg {

void MoeStepStats::clear() {
  sum_.clear();
  micro_batches_ = 0;
}

void MoeStepStats::add(const std::vector<MoeLayerStats>& micro_batch) {
  if (micro_batch.empty()) return;
  if (sum_.empty()) {
    sum_ = micro_batch;
  } else {
    PG_CHECK(sum_.size() == micro_batch.size(), "MoeStepStats: the number of MoE blocks changed");
    for (size_t i = 0; i < sum_.size(); ++i) {
      MoeLayerStats& s = sum_[i];
      const MoeLayerStats& m = micro_batch[i];
      for (size_t e = 0; e < s.load.size(); ++e) s.load[e] += m.load[e];
      s.assignments += m.assignments, s.dropped += m.dropped, s.aux += m.aux, s.z += m.z;
    }
  }
  ++micro_batches_;
}

std::vector<double> MoeStepStats::load_fraction(size_t block) const {
  const MoeLayerStats& s = sum_.at(block);
  std::vector<double> f(s.load.size());
  for (size_t e = 0; e < f.size(); ++e) f[e] = double(s.load[e]) / double(std::max<int64_t>(1, s.assignments));
  return f;
}

void MoeStepStats::write(nlohmann::json& record) const {
  if (sum_.empty()) return;
  nlohmann::json load = nlohmann::json::array();
  int64_t dropped = 0, assignments = 0;
  double aux = 0, z = 0, max_load = 0;
  for (size_t i = 0; i < sum_.size(); ++i) {
    const std::vector<double> f = load_fraction(i);
    load.push_back(f);
    for (double x : f) max_load = std::max(max_load, x * double(f.size()));
    dropped += sum_[i].dropped, assignments += sum_[i].assignments;
    aux += sum_[i].aux, z += sum_[i].z;
  }
  const double n = double(sum_.size()) * micro_batches_;
  record["expert_load"] = load;
  record["moe_max_load"] = max_load;
  record["moe_dropped_frac"] = double(dropped) / double(std::max<int64_t>(1, assignments));
  record["moe_aux_loss"] = aux / n;
  record["moe_z_loss"] = z / n;
}

void update_score_bias(const Config& cfg, const ParamTable& table, std::span<float> params,
                       const MoeStepStats& step) {
  if (cfg.moe.balance != "bias" || step.empty()) return;
  const double rate = cfg.moe.bias_update_rate;
  for (size_t i = 0; i < step.layers().size(); ++i) {
    const int layer = step.layers()[i].layer;
    const ParamInfo& b = table.get("h." + std::to_string(layer) + ".moe.router.score_bias");
    const std::vector<double> load = step.load_fraction(i);
    const double uniform = 1.0 / double(load.size());
    for (size_t e = 0; e < load.size(); ++e) {
      const double err = uniform - load[e];
      const double sign = err > 0 ? 1.0 : (err < 0 ? -1.0 : 0.0);
      params[size_t(b.offset) + e] += float(rate * sign);
    }
  }
}

}  // namespace pg
