// The run configuration: plain structs whose member initialisers are the documented defaults.
// config.cpp keeps one table of every field (key path, type, default, range, one-line description);
// loading, validation, --set overrides, the resolved config.json and the README's config reference
// all come from that table, so a key, its struct field and its override always share one name.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace pg {

struct ModelConfig {
  std::string variant = "gpt";        // gpt | lipschitz (spectral issue) | moe (MoE issue)
  int n_layer = 4;
  int n_head = 4;
  int d_model = 128;
  int d_ff = 0;                       // 0 = 4 * d_model
  int vocab_size = 50257;             // GPT-2 BPE; the GPU backend may pad to a multiple of 128
  int seq_len = 128;
  std::string norm = "layernorm";     // layernorm | rmsnorm | none
  std::string pos = "learned";        // learned | rope
  std::string activation = "gelu";    // gelu | relu2
  bool qk_norm = false;               // RMS-normalise q and k per head before attention
  bool tie_embeddings = true;         // LM head shares the token embedding matrix
  bool bias = true;                   // biases in linear layers and norms
  double logit_softcap = 0.0;         // 0 = off; else logits <- cap * tanh(logits / cap)
  double rope_theta = 10000.0;
  double init_std = 0.02;

  bool operator==(const ModelConfig&) const = default;
};

struct DataConfig {
  std::string train = "data/brown/brown_train_*.bin";  // glob of token shards
  std::string val = "data/brown/brown_val_*.bin";
  std::string tokenizer = "data/tokenizer";            // dir with encoder.json + vocab.bpe
  std::string sampling = "random";                     // random | sequential

  bool operator==(const DataConfig&) const = default;
};

struct OptimConfig {
  std::string kind = "adamw";         // adamw | muon
  double lr = 3e-3;
  double weight_decay = 0.1;          // decoupled; never applied to norms, gains, biases
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double grad_clip = 1.0;             // global-norm clip; 0 = off
  int warmup_steps = 20;
  std::string schedule = "cosine";    // constant | cosine | linear (warm-down after warm-up)
  double min_lr_ratio = 0.1;          // floor of the decay as a fraction of lr
  int warmdown_steps = 0;             // linear/cosine: steps of decay at the end; 0 = all after warm-up

  bool operator==(const OptimConfig&) const = default;
};

struct TrainConfig {
  int max_steps = 300;
  int batch_size = 16;                // sequences per micro-batch (per rank)
  int grad_accum = 1;
  int eval_every = 50;                // 0 = only at the end
  int eval_batches = 16;
  int log_every = 10;
  int checkpoint_every = 100;         // 0 = only at the end
  uint64_t seed = 1337;
  int max_skipped = 5;                // consecutive non-finite steps that stop the run
  std::string device = "auto";        // auto | cpu | cuda
  int threads = 0;                    // CPU threads for GEMM; 0 = all cores
  int sample_every = 0;               // 0 = never; else print a sample every N steps
  int sample_tokens = 32;
  bool tensorboard = false;           // also write metrics as a TensorBoard event file

  bool operator==(const TrainConfig&) const = default;
};

// Data parallelism (src/dist/). Multi-process runs (scripts/launch.sh) take their ranks from the
// environment; dist.cpu_ranks runs ranks as threads of one process on the CPU.
struct DistConfig {
  std::string grad_dtype = "fp32";    // fp32 | bf16: the dtype gradients are reduced in
  int zero = 0;                       // 0: all-reduce; 1: ZeRO-1 (reduce-scatter, sharded AdamW state)
  double timeout_s = 300.0;           // rendezvous: how long to wait for every rank
  double bucket_mb = 25.0;            // gradient bucket size, MiB of fp32 gradients
  int cpu_ranks = 1;                  // ranks as threads of this process (CPU backend)

  bool operator==(const DistConfig&) const = default;
};

struct Config {
  ModelConfig model;
  DataConfig data;
  OptimConfig optim;
  TrainConfig train;
  DistConfig dist;

  int d_ff() const { return model.d_ff > 0 ? model.d_ff : 4 * model.d_model; }
  int d_head() const { return model.d_model / model.n_head; }

  bool operator==(const Config&) const = default;
};

// Reads `path` (JSON), applies `overrides` ("key.path=value", in order) and validates.
// Throws pg::UserError with one line naming the file/key and what was expected.
// Keys the file omits keep their defaults. Besides the sections, the top level may hold a
// "$comment" or "description" string, which is ignored; any other unknown key is an error.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});
// Defaults + overrides, no file.
Config default_config(const std::vector<std::string>& overrides = {});
// Applies one "key.path=value" override; value parsed per the field's type: true|false for bools,
// a JSON number for numbers, the raw text (or a JSON-quoted string) for strings.
void apply_override(Config& cfg, const std::string& assignment);
// Every field and cross-field constraint (d_model % n_head == 0, rope needs even d_head, ...).
// `origin` starts the error line (the config file, "--set", ...).
void validate(const Config& cfg, const std::string& origin = "config");
nlohmann::json to_json(const Config& cfg);             // the resolved config, every field
// Defaults overlaid with `j`; types and per-field ranges are checked, cross-field constraints are
// left to validate() so that overrides can still fix them. origin names the source in errors.
Config from_json(const nlohmann::json& j, const std::string& origin);
// Markdown table: key | type | default | description, for the README.
std::string describe_markdown();

// One row of the field table, for listings (help text, completion, the README).
struct FieldInfo {
  std::string key;                   // "model.n_layer": JSON path, struct field and --set key
  std::string type;                  // int | uint64 | float | bool | enum | string
  nlohmann::json default_value;
  std::vector<std::string> choices;  // allowed values of an enum, else empty
  std::string range;                 // ">= 1", "> 0", "in [0, 1)", "non-empty"; "" when any value
  std::string description;
};
// Every field, in table order.
std::vector<FieldInfo> config_fields();

}  // namespace pg
