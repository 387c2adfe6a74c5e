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
  double attn_scale = 1.0;            // lipschitz variant: attention logits scaled by attn_scale / d_head

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
  // Muon (optim.kind = muon): the hidden matrices; the rest stays on AdamW (src/optim/muon.hpp).
  double muon_lr = 0.02;              // peak lr of the Muon matrices (optim.lr is AdamW's); same schedule
  double muon_momentum = 0.95;
  bool muon_nesterov = true;
  std::string muon_scale = "keller";  // keller: sqrt(max(1, rows/cols)) | moonlight: 0.2 sqrt(max(rows, cols))
  std::string muon_include;           // comma-separated globs of parameter names forced onto Muon
  std::string muon_exclude;           // comma-separated globs forced onto AdamW (wins over include)
  std::string ns_schedule = "polar-express";  // keller5 | polar-express
  int ns_steps = 5;
  std::string ns_precision = "bf16";  // bf16 | fp16 | fp32 (emulated rounding on the CPU)

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
  double peak_tflops = 0.0;           // MFU's denominator; 0 = the GPU's known bf16 dense peak (none: no mfu)
  std::string recompute = "none";     // none | act | act_norm: GPU activations recomputed in backward

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

// Spectral weight projection, sigma_max monitoring and the Lipschitz certificate
// (src/spectral/constrain.hpp, ALGORITHMS.md sections 3-5).
struct SpectralConfig {
  std::string method = "none";        // none | normalize | hammer | softcap | hardcap
  std::string norm = "spectral";      // spectral: sigma_1 <= w_max | rms: sqrt(n_in/n_out) sigma_1 <= w_max
  double w_max = 1.0;                 // default bound; the per-role ones below override it when > 0
  double w_max_attn = 0.0;
  double w_max_mlp = 0.0;
  double w_max_expert = 0.0;
  double w_max_head = 0.0;
  std::string roles = "attn,mlp,expert,head";  // comma-separated roles that are constrained
  int power_iters = 4;                // power iterations per step (normalize, hammer)
  bool warm_start = true;             // keep power-iteration vectors between steps and in checkpoints
  int monitor_every = 0;              // 0 = off; else sigma_max of matching matrices every N steps
  std::string monitor_filter = "*";   // comma-separated glob patterns on parameter names
  std::string monitor_method = "ns3-accurate";  // ns5-fast | ns3-accurate | power
  int monitor_iters = 30;             // power iterations of the monitor
  std::string precision = "fp32";     // CUDA: GEMM operands of the soft cap, hard cap and polar monitor (fp32 | fp16 | bf16)

  bool operator==(const SpectralConfig&) const = default;
};

// Mixture of experts (model.variant = moe): the MLP of every `every`-th block becomes a router
// over n_expert expert MLPs of width d_ff_expert, of which each token uses top_k (plus n_shared
// experts every token passes through). See model/cpu_moe.hpp for the math.
struct MoeConfig {
  int n_expert = 0;                   // 0 = dense (no MoE layers)
  int top_k = 2;                      // experts per token; gates renormalised over them
  int d_ff_expert = 0;                // hidden width of each expert; 0 = model.d_ff
  double capacity_factor = 0.0;       // 0 = dropless; else capacity = ceil(cf * tokens * top_k / n_expert)
  int every = 1;                      // block l is MoE when (l + 1) % every == 0
  double aux_loss_coef = 0.01;        // Switch load-balancing loss weight (balance = aux)
  double z_loss_coef = 0.001;         // router z-loss weight
  std::string balance = "aux";        // aux | bias (auxiliary-loss-free, per-expert selection bias)
  double bias_update_rate = 0.001;    // balance = bias: step of the per-expert bias per update
  int n_shared = 0;                   // shared experts every token passes through

  bool operator==(const MoeConfig&) const = default;
};

struct Config {
  ModelConfig model;
  DataConfig data;
  OptimConfig optim;
  TrainConfig train;
  DistConfig dist;
  SpectralConfig spectral;
  MoeConfig moe;

  int d_ff() const { return model.d_ff > 0 ? model.d_ff : 4 * model.d_model; }
  int d_ff_expert() const { return moe.d_ff_expert > 0 ? moe.d_ff_expert : d_ff(); }
  bool is_moe_layer(int l) const { return moe.n_expert > 0 && (l + 1) % moe.every == 0; }
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
