// Saving and loading a training state as one checkpoint directory (DESIGN.md decision 7):
//   model.safetensors      fp32 master weights, keyed by parameter name
//   optimizer.safetensors  AdamW moments ("<name>.exp_avg", "<name>.exp_avg_sq"), keyed by name
//                          (+ any extra optimizer tensors, e.g. "<name>.power_u" / "<name>.power_v")
//   state.json             step counters, rng state, data position, the resolved config
// Written through io::CheckpointTransaction (temp dir, fsync, rename, `latest`), so a crash
// never leaves a half-written checkpoint. Keys are names, not offsets: a checkpoint survives a
// change of parameter order.
#pragma once
#include <cstdint>
#include <span>
#include <string>

#include <nlohmann/json.hpp>

#include "io/safetensors.hpp"
#include "model/param_table.hpp"

namespace pg {

struct OptimizerStateView {  // flat buffers laid out by the ParamTable
  std::span<float> exp_avg, exp_avg_sq;
};

void save_checkpoint(const std::string& run_dir, int64_t step, const ParamTable& table, std::span<const float> params,
                     const OptimizerStateView& opt, const nlohmann::json& state,
                     std::span<const io::TensorRef> extra_optimizer = {});

// Reads ckpt_dir/model.safetensors into params (every table entry must be present with its shape).
void load_model_weights(const std::string& ckpt_dir, const ParamTable& table, std::span<float> params);
void load_optimizer_state(const std::string& ckpt_dir, const ParamTable& table, const OptimizerStateView& opt);
nlohmann::json load_state_json(const std::string& ckpt_dir);

}  // namespace pg
