#include "train/interchange.hpp"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include <spdlog/spdlog.h>

#include "core/error.hpp"
#include "io/checkpoint_dir.hpp"
#include "io/llmc_model.hpp"
#include "io/safetensors.hpp"
#include "model/gpt.hpp"
#include "model/gpt2_layout.hpp"
#include "train/checkpoint.hpp"

namespace fs = std::filesystem;

namespace pg {

namespace {

struct LoadedModel {
  nlohmann::json state;
  Config cfg;
  ParamTable table;
  std::vector<float> params;
};

LoadedModel load_model(const std::string& ckpt_dir) {
  LoadedModel m;
  m.state = load_state_json(ckpt_dir);
  m.cfg = from_json(m.state.at("config"), ckpt_dir + "/state.json");
  m.table = build_gpt_params(m.cfg);
  m.params.assign(size_t(m.table.total()), 0.0f);
  load_model_weights(ckpt_dir, m.table, m.params);
  return m;
}

void write_json(const std::string& path, const nlohmann::json& j) {
  std::ofstream f(path);
  f << j.dump(2) << "\n";
  f.close();
  if (!f) throw UserError(path + ": write failed");
}

}  // namespace

Config import_llmc(const std::string& llmc_file, const std::string& out_dir, const Config& base) {
  std::error_code ec;
  if (fs::exists(out_dir) && !fs::is_empty(out_dir, ec))
    throw UserError(out_dir + ": already exists and is not empty (choose a new checkpoint directory)");
  const io::LlmcModel m = io::read_llmc_model(llmc_file);
  const Config cfg = gpt2_config_from_llmc(m.header, base, llmc_file + " (llm.c header)");
  const ParamTable table = build_gpt_params(cfg);
  std::vector<float> params(size_t(table.total()), 0.0f);
  params_from_llmc(m, table, params);

  // The padding rows never reach the loss; say so if they are not the zeros llm.c writes.
  const int64_t C = m.header.d_model;
  int64_t nonzero = 0;
  for (int64_t i = int64_t(m.header.vocab_size) * C; i < int64_t(m.header.padded_vocab_size) * C; ++i)
    nonzero += m.params[size_t(i)] != 0.0f;
  if (nonzero > 0)
    spdlog::warn("{}: {} non-zero values in wte's padding rows {}..{} dropped (no token uses them)", llmc_file,
                 nonzero, m.header.vocab_size, m.header.padded_vocab_size - 1);

  // Written next to the destination, then renamed: a failed import leaves nothing behind.
  const fs::path dest = fs::absolute(out_dir).lexically_normal();
  const std::string tmp = (dest.parent_path() / (".tmp-" + dest.filename().string() + "-" + std::to_string(::getpid()))).string();
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) throw UserError(tmp + ": cannot create directory (" + ec.message() + ")");
  try {
    std::vector<io::TensorRef> refs;
    for (const auto& p : table.entries())
      refs.push_back({p.name, "F32", p.shape, params.data() + p.offset, size_t(p.numel) * sizeof(float)});
    io::write_safetensors(tmp + "/model.safetensors", refs, {{"format", "pt"}, {"producer", "polargpt import"}});
    nlohmann::json st = {{"step", 0}, {"config", to_json(cfg)}};
    st["source"] = {{"format", "llmc"},
                    {"file", fs::absolute(llmc_file).lexically_normal().string()},
                    {"version", m.header.version},
                    {"padded_vocab_size", m.header.padded_vocab_size}};
    write_json(tmp + "/state.json", st);
    io::fsync_path(tmp + "/model.safetensors");
    io::fsync_path(tmp + "/state.json");
    if (fs::exists(dest)) fs::remove(dest);  // empty, checked above
    fs::rename(tmp, dest);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  spdlog::info("imported {} ({} parameters: {} layers, d_model {}, {} heads, vocab {} padded {}, seq_len {}) into {}",
               llmc_file, table.n_params(), cfg.model.n_layer, cfg.model.d_model, cfg.model.n_head,
               cfg.model.vocab_size, m.header.padded_vocab_size, cfg.model.seq_len, out_dir);
  return cfg;
}

void export_hf(const std::string& ckpt_dir, const std::string& out_dir) {
  const LoadedModel m = load_model(ckpt_dir);
  const std::vector<HfTensor> tensors = params_to_hf(m.cfg, m.table, m.params);  // checks compatibility first
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw UserError(out_dir + ": cannot create directory (" + ec.message() + ")");
  std::vector<io::TensorRef> refs;
  for (const auto& t : tensors) refs.push_back({t.name, "F32", t.shape, t.data.data(), t.data.size() * sizeof(float)});
  // transformers refuses safetensors files whose metadata lacks format = pt.
  io::write_safetensors(out_dir + "/model.safetensors", refs, {{"format", "pt"}, {"producer", "polargpt export"}});
  write_json(out_dir + "/config.json", hf_config_json(m.cfg));
  write_json(out_dir + "/polargpt.json", {{"ckpt", fs::absolute(ckpt_dir).lexically_normal().string()},
                                          {"step", m.state.at("step")},
                                          {"config", to_json(m.cfg)}});
  // GPT-2's tokenizer files are ours under other names (encoder.json = vocab.json, vocab.bpe =
  // merges.txt); copying them lets GPT2TokenizerFast load the export too.
  const std::string tok = m.cfg.data.tokenizer;
  if (m.cfg.model.vocab_size == 50257 && fs::exists(tok + "/encoder.json") && fs::exists(tok + "/vocab.bpe")) {
    fs::copy_file(tok + "/encoder.json", out_dir + "/vocab.json", fs::copy_options::overwrite_existing, ec);
    if (!ec) fs::copy_file(tok + "/vocab.bpe", out_dir + "/merges.txt", fs::copy_options::overwrite_existing, ec);
    if (ec) spdlog::warn("{}: tokenizer files not copied ({})", out_dir, ec.message());
  }
  spdlog::info("exported {} (step {}) as a Hugging Face GPT2LMHeadModel to {}", ckpt_dir, m.state.at("step").dump(),
               out_dir);
}

void export_llmc(const std::string& ckpt_dir, const std::string& out_file, bool bf16, int32_t padded_vocab) {
  const LoadedModel m = load_model(ckpt_dir);
  if (padded_vocab == 0) {
    const auto& src = m.state.value("source", nlohmann::json::object());
    padded_vocab = src.value("format", "") == "llmc" ? src.value("padded_vocab_size", 0) : 0;
    if (padded_vocab < m.cfg.model.vocab_size) padded_vocab = default_padded_vocab(m.cfg.model.vocab_size);
  }
  const io::LlmcModel out = params_to_llmc(m.cfg, m.table, m.params, padded_vocab,
                                           bf16 ? io::kLlmcVersionBF16 : io::kLlmcVersionF32);
  io::write_llmc_model(out_file, out);
  spdlog::info("exported {} (step {}) as an llm.c model (version {}, vocab {} padded {}) to {}", ckpt_dir,
               m.state.at("step").dump(), out.header.version, out.header.vocab_size, padded_vocab, out_file);
}

}  // namespace pg
