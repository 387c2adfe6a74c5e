// Step-level MoE bookkeeping for the trainer: routing statistics summed over a step's
// micro-batches (the metrics expert_load, moe_dropped_frac, moe_aux_loss, moe_z_loss), and the
// auxiliary-loss-free balancing update (balance = bias, as DeepSeek-V3): after each optimizer
// update, every MoE block's selection bias moves against its experts' load error,
//   b_e <- b_e + bias_update_rate · sign(1/E − load_e),   load_e = assignments to e / all assignments,
// so an overloaded expert becomes less likely to be selected and an idle one more. The gates
// never see b, so the bias changes which experts run, not how their outputs are weighted.
#pragma once
#include <span>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/config.hpp"
#include "model/cpu_moe.hpp"
#include "model/param_table.hpp"

namespace pg {

class MoeStepStats {
 public:
  void clear();
  // Adds one micro-batch's per-block stats (CpuGpt::moe_stats()).
  void add(const std::vector<MoeLayerStats>& micro_batch);
  bool empty() const { return sum_.empty(); }
  const std::vector<MoeLayerStats>& layers() const { return sum_; }  // sums over micro-batches
  // load_e of one block: its share of the step's assignments (sums to 1; uniform = 1/E).
  std::vector<double> load_fraction(size_t block) const;
  // expert_load: [[load_e per expert] per MoE block]; moe_dropped_frac: dropped / assignments;
  // moe_aux_loss, moe_z_loss: means over blocks and micro-batches; moe_max_load: the largest
  // load_e · E over blocks (1 = perfectly balanced).
  void write(nlohmann::json& record) const;

 private:
  std::vector<MoeLayerStats> sum_;
  int micro_batches_ = 0;
};

// balance = bias: the update above, on every h.<l>.moe.router.score_bias; no-op otherwise.
void update_score_bias(const Config& cfg, const ParamTable& table, std::span<float> params,
                       const MoeStepStats& step);

}  // namespace pg
