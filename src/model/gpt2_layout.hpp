// Our `gpt2`-shaped models in the two layouts other GPT-2 code uses, both ways where it matters:
//
//   ours (model/gpt.hpp)          llm.c (io/llmc_model.hpp)              Hugging Face GPT2LMHeadModel
//   wte [V, C]                    wte [Vp, C] (rows V.. zero padding)    transformer.wte.weight [V, C]
//   wpe [T, C]                    wpe [maxT, C]                          transformer.wpe.weight [T, C]
//   h.l.ln_1.{weight,bias} [C]    ln1w[l], ln1b[l]                       transformer.h.l.ln_1.{weight,bias}
//   h.l.attn.{q,k,v}.weight [C,C] qkvw[l] [3C, C] = [W_q; W_k; W_v]      attn.c_attn.weight [C, 3C] = [W_q; W_k; W_v]^T
//   h.l.attn.{q,k,v}.bias [C]     qkvb[l] [3C]                           attn.c_attn.bias [3C]
//   h.l.attn.o.{weight,bias}      attprojw[l] [C, C], attprojb[l]        attn.c_proj.weight [C, C] = W_o^T, .bias
//   h.l.ln_2.{weight,bias}        ln2w[l], ln2b[l]                       transformer.h.l.ln_2.{weight,bias}
//   h.l.mlp.fc.{weight,bias}      fcw[l] [4C, C], fcb[l]                 mlp.c_fc.weight [C, F] = W_fc^T, .bias
//   h.l.mlp.proj.{weight,bias}    fcprojw[l] [C, 4C], fcprojb[l]         mlp.c_proj.weight [F, C] = W_proj^T, .bias
//   ln_f.{weight,bias} [C]        lnfw, lnfb                             transformer.ln_f.{weight,bias}
//   (head tied to wte)            (head tied to wte)                     lm_head tied (tie_word_embeddings)
//
// Ours and llm.c's store linear weights as [out, in] (y = x W^T + b), so that mapping is plain
// copies; Hugging Face's Conv1D stores [in, out] (y = x W + b), so its matrices are transposed.
// The vocab is never padded on our side: the padded rows of an llm.c wte belong to no token (llm.c
// takes the softmax over the first V logits only), so dropping them leaves the model's function
// unchanged; an export to llm.c pads again with zero rows.
// The shared model function: LayerNorm (eps 1e-5), learned positions, GELU in its tanh form
// (Hugging Face's "gelu_new"), attention scaled by 1/sqrt(d_head), biases everywhere, tied head.
// Test: tests/io/test_gpt2_interchange.cpp.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/config.hpp"
#include "io/llmc_model.hpp"
#include "model/param_table.hpp"

namespace pg {

// UserError with one line naming the first config field that GPT-2 (as `target` lays it out:
// "hf" or "llmc") cannot express, e.g. "model.norm: 'rmsnorm' has no GPT-2 equivalent (...)".
void check_gpt2_compatible(const Config& cfg, const std::string& target);

// base with its model section replaced by the GPT-2 architecture of the header: n_layer, n_head,
// d_model, vocab_size = V, seq_len = maxT (the length of wpe), d_ff = 4 d_model; validated.
Config gpt2_config_from_llmc(const io::LlmcHeader& h, Config base, const std::string& origin);

// llm.c tensors -> our flat parameters (laid out by table, built from gpt2_config_from_llmc).
void params_from_llmc(const io::LlmcModel& m, const ParamTable& table, std::span<float> params);

// Our parameters -> an llm.c model of the given version (3 or 5), wte padded with zero rows to
// padded_vocab (>= vocab_size). cfg must pass check_gpt2_compatible(cfg, "llmc").
io::LlmcModel params_to_llmc(const Config& cfg, const ParamTable& table, std::span<const float> params,
                             int32_t padded_vocab, int32_t version);
// llm.c's default padding: vocab_size rounded up to a multiple of 128.
int32_t default_padded_vocab(int32_t vocab_size);

// One tensor of a Hugging Face export, fp32, in its safetensors name and shape.
struct HfTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;
};
// Our parameters -> GPT2LMHeadModel's tensors (no lm_head.weight: it is tied to wte).
std::vector<HfTensor> params_to_hf(const Config& cfg, const ParamTable& table, std::span<const float> params);
// GPT2LMHeadModel's config.json for cfg.
nlohmann::json hf_config_json(const Config& cfg);

}  // namespace pg
