#include "train/checkpoint.hpp"

#include <filesystem>
#include <fstream>
#include <vector>

#include "core/error.hpp"
#include "io/checkpoint_dir.hpp"
#include "io/safetensors.hpp"

namespace pg {

namespace {
std::vector<io::TensorRef> refs_for(const ParamTable& table, std::span<const float> buf) {
  std::vector<io::TensorRef> refs;
  for (const auto& p : table.entries())
    refs.push_back({p.name, "F32", p.shape, buf.data() + p.offset, size_t(p.numel) * sizeof(float)});
  return refs;
}
}  // namespace

void save_checkpoint(const std::string& run_dir, int64_t step, const ParamTable& table, std::span<const float> params,
                     std::span<const StateTensor> opt_state, const nlohmann::json& state,
                     std::span<const io::TensorRef> extra_optimizer) {
  io::CheckpointTransaction tx(run_dir, step);
  io::write_safetensors(tx.dir() + "/model.safetensors", refs_for(table, params),
                        {{"format", "pt"}, {"producer", "polargpt"}});
  std::vector<io::TensorRef> opt_refs;
  for (const auto& s : opt_state)
    opt_refs.push_back({s.name, "F32", s.shape, s.data, size_t(s.numel) * sizeof(float)});
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

void load_optimizer_state(const std::string& ckpt_dir, std::span<const StateTensor> opt_state) {
  io::SafetensorsReader r(ckpt_dir + "/optimizer.safetensors");
  for (const auto& s : opt_state) r.read_into(s.name, s.data, "F32", s.shape);
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
