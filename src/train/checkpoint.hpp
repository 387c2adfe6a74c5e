// Saving and loading a training state as one checkpoint directory (DESIGN.md decision 7):
//   model.safetensors      fp32 master weights, keyed by parameter name
//   optimizer.safetensors  the optimizer's state tensors as it names them (optim/optimizer.hpp:
//                          "<name>.exp_avg", "<name>.exp_avg_sq" for AdamW, "<name>.momentum_buffer"
//                          for Muon), keyed by parameter name, plus any extra tensors (the
//                          spectral projection's "<name>.power_u" / "<name>.power_v")
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
#include "optim/optimizer.hpp"

namespace pg {

void save_checkpoint(const std::string& run_dir, int64_t step, const ParamTable& table, std::span<const float> params,
                     std::span<const StateTensor> opt_state, const nlohmann::json& state,
                     std::span<const io::TensorRef> extra_optimizer = {});

// Reads ckpt_dir/model.safetensors into params (every table entry must be present with its shape).
void load_model_weights(const std::string& ckpt_dir, const ParamTable& table, std::span<float> params);
// Reads every tensor of `opt_state` (by name, shape checked) from ckpt_dir/optimizer.safetensors.
void load_optimizer_state(const std::string& ckpt_dir, std::span<const StateTensor> opt_state);
nlohmann::json load_state_json(const std::string& ckpt_dir);

}  // namespace pg
