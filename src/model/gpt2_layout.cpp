#include "model/gpt2_layout.hpp"

#include <algorithm>
#include <cstring>

#include "core/error.hpp"

namespace pg {

namespace {

// One contiguous run of floats that is the same data in our flat buffer and in llm.c's
// concatenated tensors. Both store [out, in], so the whole mapping is a list of these.
struct Run {
  int64_t ours, theirs, n;
};

std::vector<Run> llmc_runs(const Config& cfg, const ParamTable& t, const io::LlmcHeader& h) {
  const auto sizes = io::llmc_tensor_sizes(h);
  std::array<int64_t, io::kLlmcTensors> start{};
  for (int i = 1; i < io::kLlmcTensors; ++i) start[size_t(i)] = start[size_t(i - 1)] + sizes[size_t(i - 1)];
  enum { wte, wpe, ln1w, ln1b, qkvw, qkvb, attprojw, attprojb, ln2w, ln2b, fcw, fcb, fcprojw, fcprojb, lnfw, lnfb };
  const int64_t C = cfg.model.d_model, F = cfg.d_ff(), CC = C * C;
  std::vector<Run> runs;
  auto add = [&](const std::string& name, int tensor, int64_t offset) {
    const ParamInfo& p = t.get(name);
    runs.push_back({p.offset, start[size_t(tensor)] + offset, p.numel});
  };
  add("wte", wte, 0);  // the first V rows; rows V..Vp-1 are padding
  add("wpe", wpe, 0);
  for (int64_t l = 0; l < cfg.model.n_layer; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    add(p + "ln_1.weight", ln1w, l * C);
    add(p + "ln_1.bias", ln1b, l * C);
    add(p + "attn.q.weight", qkvw, l * 3 * CC);
    add(p + "attn.k.weight", qkvw, l * 3 * CC + CC);
    add(p + "attn.v.weight", qkvw, l * 3 * CC + 2 * CC);
    add(p + "attn.q.bias", qkvb, l * 3 * C);
    add(p + "attn.k.bias", qkvb, l * 3 * C + C);
    add(p + "attn.v.bias", qkvb, l * 3 * C + 2 * C);
    add(p + "attn.o.weight", attprojw, l * CC);
    add(p + "attn.o.bias", attprojb, l * C);
    add(p + "ln_2.weight", ln2w, l * C);
    add(p + "ln_2.bias", ln2b, l * C);
    add(p + "mlp.fc.weight", fcw, l * F * C);
    add(p + "mlp.fc.bias", fcb, l * F);
    add(p + "mlp.proj.weight", fcprojw, l * C * F);
    add(p + "mlp.proj.bias", fcprojb, l * C);
  }
  add("ln_f.weight", lnfw, 0);
  add("ln_f.bias", lnfb, 0);
  PG_CHECK(int64_t(runs.size()) == int64_t(t.entries().size()), "llm.c mapping does not cover every parameter");
  return runs;
}

// [rows, cols] -> [cols, rows]
void transpose_into(float* dst, const float* src, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
}

}  // namespace

void check_gpt2_compatible(const Config& cfg, const std::string& target) {
  const auto& m = cfg.model;
  const std::string why = " has no GPT-2 equivalent (" + target + " export needs ";
  auto refuse = [&](const std::string& key, const std::string& value, const std::string& need) {
    throw UserError(key + ": " + value + why + need + ")");
  };
  if (m.variant != "gpt") refuse("model.variant", "'" + m.variant + "'", "model.variant = gpt");
  if (m.norm != "layernorm") refuse("model.norm", "'" + m.norm + "'", "layernorm");
  if (m.pos != "learned") refuse("model.pos", "'" + m.pos + "'", "learned positions");
  if (m.activation != "gelu") refuse("model.activation", "'" + m.activation + "'", "gelu");
  if (m.qk_norm) refuse("model.qk_norm", "true", "qk_norm = false");
  if (m.logit_softcap != 0.0) refuse("model.logit_softcap", std::to_string(m.logit_softcap), "logit_softcap = 0");
  if (!m.tie_embeddings) refuse("model.tie_embeddings", "false", "a head tied to wte");
  if (!m.bias) refuse("model.bias", "false", "biases");
  if (target == "llmc" && cfg.d_ff() != 4 * m.d_model)
    refuse("model.d_ff", std::to_string(m.d_ff), "d_ff = 4 * d_model");
}

Config gpt2_config_from_llmc(const io::LlmcHeader& h, Config base, const std::string& origin) {
  auto& m = base.model;
  m = ModelConfig{};  // every architecture field back to its default, which is GPT-2's
  m.variant = "gpt";
  m.n_layer = h.n_layer;
  m.n_head = h.n_head;
  m.d_model = h.d_model;
  m.d_ff = 0;
  m.vocab_size = h.vocab_size;
  m.seq_len = h.max_seq_len;
  m.norm = "layernorm";
  m.pos = "learned";
  m.activation = "gelu";
  m.qk_norm = false;
  m.tie_embeddings = true;
  m.bias = true;
  m.logit_softcap = 0.0;
  validate(base, origin);
  return base;
}

void params_from_llmc(const io::LlmcModel& m, const ParamTable& table, std::span<float> params) {
  const Config cfg = gpt2_config_from_llmc(m.header, Config{}, "llm.c header");
  std::fill(params.begin(), params.end(), 0.0f);
  for (const Run& r : llmc_runs(cfg, table, m.header))
    std::memcpy(params.data() + r.ours, m.params.data() + r.theirs, size_t(r.n) * sizeof(float));
}

io::LlmcModel params_to_llmc(const Config& cfg, const ParamTable& table, std::span<const float> params,
                             int32_t padded_vocab, int32_t version) {
  check_gpt2_compatible(cfg, "llmc");
  const auto& m = cfg.model;
  if (padded_vocab < m.vocab_size)
    throw UserError("padded vocab " + std::to_string(padded_vocab) + " is smaller than model.vocab_size " +
                    std::to_string(m.vocab_size));
  io::LlmcModel out;
  out.header = {version, m.seq_len, m.vocab_size, m.n_layer, m.n_head, m.d_model, padded_vocab};
  int64_t n = 0;
  for (const int64_t s : io::llmc_tensor_sizes(out.header)) n += s;
  out.params.assign(size_t(n), 0.0f);  // padding rows stay zero
  for (const Run& r : llmc_runs(cfg, table, out.header))
    std::memcpy(out.params.data() + r.theirs, params.data() + r.ours, size_t(r.n) * sizeof(float));
  return out;
}

int32_t default_padded_vocab(int32_t vocab_size) { return (vocab_size + 127) / 128 * 128; }

std::vector<HfTensor> params_to_hf(const Config& cfg, const ParamTable& table, std::span<const float> params) {
  check_gpt2_compatible(cfg, "hf");
  const int64_t C = cfg.model.d_model;
  std::vector<HfTensor> out;
  auto data = [&](const std::string& name) { return params.data() + table.get(name).offset; };
  auto copy = [&](const std::string& hf, const std::string& ours) {
    const ParamInfo& p = table.get(ours);
    out.push_back({hf, p.shape, std::vector<float>(data(ours), data(ours) + p.numel)});
  };
  // Conv1D weight: ours [out, in] -> [in, out].
  auto conv1d = [&](const std::string& hf, const std::string& ours) {
    const ParamInfo& p = table.get(ours);
    HfTensor t{hf, {p.shape[1], p.shape[0]}, std::vector<float>(size_t(p.numel))};
    transpose_into(t.data.data(), data(ours), p.shape[0], p.shape[1]);
    out.push_back(std::move(t));
  };
  copy("transformer.wte.weight", "wte");
  copy("transformer.wpe.weight", "wpe");
  for (int l = 0; l < cfg.model.n_layer; ++l) {
    const std::string h = "transformer.h." + std::to_string(l) + ".", p = "h." + std::to_string(l) + ".";
    copy(h + "ln_1.weight", p + "ln_1.weight");
    copy(h + "ln_1.bias", p + "ln_1.bias");
    // c_attn: [W_q; W_k; W_v] is [3C, C] (q, k, v adjacent in our buffer), stored transposed.
    HfTensor qkv{h + "attn.c_attn.weight", {C, 3 * C}, std::vector<float>(size_t(3 * C * C))};
    std::vector<float> stacked(size_t(3 * C * C));
    for (int i = 0; i < 3; ++i)
      std::copy_n(data(p + "attn." + "qkv"[i] + ".weight"), C * C, stacked.begin() + i * C * C);
    transpose_into(qkv.data.data(), stacked.data(), 3 * C, C);
    out.push_back(std::move(qkv));
    HfTensor qkv_b{h + "attn.c_attn.bias", {3 * C}, std::vector<float>(size_t(3 * C))};
    for (int i = 0; i < 3; ++i) std::copy_n(data(p + "attn." + "qkv"[i] + ".bias"), C, qkv_b.data.begin() + i * C);
    out.push_back(std::move(qkv_b));
    conv1d(h + "attn.c_proj.weight", p + "attn.o.weight");
    copy(h + "attn.c_proj.bias", p + "attn.o.bias");
    copy(h + "ln_2.weight", p + "ln_2.weight");
    copy(h + "ln_2.bias", p + "ln_2.bias");
    conv1d(h + "mlp.c_fc.weight", p + "mlp.fc.weight");
    copy(h + "mlp.c_fc.bias", p + "mlp.fc.bias");
    conv1d(h + "mlp.c_proj.weight", p + "mlp.proj.weight");
    copy(h + "mlp.c_proj.bias", p + "mlp.proj.bias");
  }
  copy("transformer.ln_f.weight", "ln_f.weight");
  copy("transformer.ln_f.bias", "ln_f.bias");
  return out;
}

nlohmann::json hf_config_json(const Config& cfg) {
  check_gpt2_compatible(cfg, "hf");
  const auto& m = cfg.model;
  nlohmann::json n_inner = nullptr;  // null means 4 * n_embd
  if (cfg.d_ff() != 4 * m.d_model) n_inner = cfg.d_ff();
  nlohmann::json j = {
      {"architectures", {"GPT2LMHeadModel"}},
      {"model_type", "gpt2"},
      {"vocab_size", m.vocab_size},
      {"n_positions", m.seq_len},
      {"n_ctx", m.seq_len},
      {"n_embd", m.d_model},
      {"n_layer", m.n_layer},
      {"n_head", m.n_head},
      {"n_inner", n_inner},
      {"activation_function", "gelu_new"},  // the tanh form, which is ours
      {"layer_norm_epsilon", 1e-5},         // cpu::layernorm_fwd's eps
      {"resid_pdrop", 0.0},
      {"embd_pdrop", 0.0},
      {"attn_pdrop", 0.0},
      {"initializer_range", m.init_std},
      {"scale_attn_weights", true},  // 1/sqrt(d_head), as ours
      {"scale_attn_by_inverse_layer_idx", false},
      {"reorder_and_upcast_attn", false},
      {"tie_word_embeddings", true},
      {"use_cache", true},
      {"torch_dtype", "float32"},
  };
  if (m.vocab_size > 50256) j["bos_token_id"] = j["eos_token_id"] = 50256;  // GPT-2's <|endoftext|>
  return j;
}

}  // namespace pg
