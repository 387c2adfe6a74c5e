#include "train/checkpoint.hpp"

#include <filesystem>
#include <fstream>
#include <vector>

#include "core/error.hpp"
#include "io/checkpoint_dir.hpp"
#include "io/safetensors.hpp"

namespace pg {

namespace {
std::vector<io::TensorRef> refs_for(const ParamTable& table, std::span<const float> buf, const char* suffix,
                                    bool only_adamw) {
  std::vector<io::TensorRef> refs;
  for (const auto& p : table.entries()) {
    if (only_adamw && p.muon) continue;
    refs.push_back({p.name + suffix, "F32", p.shape, buf.data() + p.offset, size_t(p.numel) * sizeof(float)});
  }
  return refs;
}
}  // namespace

void save_checkpoint(const std::string& run_dir, int64_t step, const ParamTable& table, std::span<const float> params,
                     const OptimizerStateView& opt, const nlohmann::json& state,
                     std::span<const io::TensorRef> extra_optimizer) {
  io::CheckpointTransaction tx(run_dir, step);
  io::write_safetensors(tx.dir() + "/model.safetensors", refs_for(table, params, "", false),
                        {{"format", "pt"}, {"producer", "polargpt"}});
  auto opt_refs = refs_for(table, opt.exp_avg, ".exp_avg", false);
  auto sq = refs_for(table, opt.exp_avg_sq, ".exp_avg_sq", false);
  opt_refs.insert(opt_refs.end(), sq.begin(), sq.end());
  opt_refs.insert(opt_refs.end(), extra_optimizer.begin(), extra_optimizer.end());
  io::write_safetensors(tx.dir() + "/optimizer.safetensors", opt_refs, {{"producer", "polargpt"}});
  {
    std::ofstream f(tx.dir() + "/state.json");
    f << state.dump(2) << "\n";
    if (!f) throw UserError(tx.dir() + "/state.json: write failed");
  }
  tx.commit();
}

void load_model_weights(const std::string& ckpt_dir, const ParamTable& table, std::span<float> params) {
  io::SafetensorsReader r(ckpt_dir + "/model.safetensors");
  for (const auto& p : table.entries())
    r.read_into(p.name, params.data() + p.offset, "F32", p.shape);
}

void load_optimizer_state(const std::string& ckpt_dir, const ParamTable& table, const OptimizerStateView& opt) {
  io::SafetensorsReader r(ckpt_dir + "/optimizer.safetensors");
  for (const auto& p : table.entries()) {
    r.read_into(p.name + ".exp_avg", opt.exp_avg.data() + p.offset, "F32", p.shape);
    r.read_into(p.name + ".exp_avg_sq", opt.exp_avg_sq.data() + p.offset, "F32", p.shape);
  }
}

nlohmann::json load_state_json(const std::string& ckpt_dir) {
  const std::string path = ckpt_dir + "/state.json";
  std::ifstream f(path);
  if (!f) throw UserError(path + ": cannot open (not a polargpt checkpoint directory?)");
  try {
    nlohmann::json j = nlohmann::json::parse(f);
    if (!j.is_object() || !j.contains("step") || !j.contains("config"))
      throw UserError(path + ": expected an object with 'step' and 'config'");
    return j;
  } catch (const nlohmann::json::exception& e) {
    throw UserError(path + ": not valid JSON (" + std::string(e.what()) + ")");
  }
}

}  // namespace pg
