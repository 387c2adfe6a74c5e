// llm.c model files in and out of our checkpoints, and the Hugging Face GPT-2 export. The llm.c
// files here are written by the test itself, from the format's description (io/llmc_model.hpp),
// not by the writer under test, so a wrong tensor order or orientation in the reader shows.
#include <catch2/catch.hpp>

#include <bit>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "config/config.hpp"
#include "core/error.hpp"
#include "core/rng.hpp"
#include "io/llmc_model.hpp"
#include "io/safetensors.hpp"
#include "common/temp_dir.hpp"
#include "model/cpu_gpt.hpp"
#include "model/gpt.hpp"
#include "model/gpt2_layout.hpp"
#include "optim/low_precision.hpp"
#include "train/checkpoint.hpp"
#include "train/interchange.hpp"

using namespace pg;
using pg::test::TempDir;
using Catch::Contains;

namespace {

// A small GPT-2: L = 2, C = 16, NH = 2, V = 37 padded to Vp = 48, maxT = 12.
struct Dims {
  int L = 2, C = 16, NH = 2, V = 37, Vp = 48, T = 12;
};

Config small_config(const Dims& d) {
  return default_config({"model.n_layer=" + std::to_string(d.L), "model.d_model=" + std::to_string(d.C),
                         "model.n_head=" + std::to_string(d.NH), "model.vocab_size=" + std::to_string(d.V),
                         "model.seq_len=" + std::to_string(d.T), "train.threads=1"});
}

// Random named tensors in our names and [out, in] shapes; bf16_exact rounds each value to bf16
// so a bf16 file holds them exactly.
std::map<std::string, std::vector<float>> random_weights(const Config& cfg, uint64_t seed, bool bf16_exact) {
  const ParamTable t = build_gpt_params(cfg);
  Rng rng(seed);
  std::map<std::string, std::vector<float>> w;
  for (const auto& p : t.entries()) {
    auto& v = w[p.name];
    v.resize(size_t(p.numel));
    for (auto& x : v) {
      x = float(0.3 * rng.normal()) + (p.role == Role::norm ? 1.0f : 0.0f);
      if (bf16_exact) x = round_to_bf16(x);
    }
  }
  return w;
}

std::vector<float> flat_params(const ParamTable& t, const std::map<std::string, std::vector<float>>& w) {
  std::vector<float> params(size_t(t.total()), 0.0f);
  for (const auto& p : t.entries()) std::copy(w.at(p.name).begin(), w.at(p.name).end(), params.begin() + p.offset);
  return params;
}

// The llm.c file of those weights, assembled by hand: 256-int header, then the 16 tensors with
// every layer's tensor of one kind back to back, q/k/v stacked into qkvw, wte padded with `pad`.
std::string llmc_bytes(const Dims& d, const std::map<std::string, std::vector<float>>& w, int version,
                       float pad = 0.0f) {
  std::vector<float> all;
  auto put = [&](const std::string& name) { all.insert(all.end(), w.at(name).begin(), w.at(name).end()); };
  auto per_layer = [&](const std::vector<std::string>& suffixes) {
    for (int l = 0; l < d.L; ++l)
      for (const auto& s : suffixes) put("h." + std::to_string(l) + "." + s);
  };
  put("wte");
  all.insert(all.end(), size_t(d.Vp - d.V) * d.C, pad);
  put("wpe");
  per_layer({"ln_1.weight"});
  per_layer({"ln_1.bias"});
  per_layer({"attn.q.weight", "attn.k.weight", "attn.v.weight"});
  per_layer({"attn.q.bias", "attn.k.bias", "attn.v.bias"});
  per_layer({"attn.o.weight"});
  per_layer({"attn.o.bias"});
  per_layer({"ln_2.weight"});
  per_layer({"ln_2.bias"});
  per_layer({"mlp.fc.weight"});
  per_layer({"mlp.fc.bias"});
  per_layer({"mlp.proj.weight"});
  per_layer({"mlp.proj.bias"});
  put("ln_f.weight");
  put("ln_f.bias");
  int32_t header[256] = {20240326, version, d.T, d.V, d.L, d.NH, d.C, d.Vp};
  std::string bytes(reinterpret_cast<const char*>(header), sizeof header);
  for (float x : all) {
    const uint32_t u = std::bit_cast<uint32_t>(x);
    if (version == 5) {
      const uint16_t b = uint16_t(u >> 16);  // exact: the weights are bf16 values
      bytes.append(reinterpret_cast<const char*>(&b), 2);
    } else {
      bytes.append(reinterpret_cast<const char*>(&u), 4);
    }
  }
  return bytes;
}

// -1 when equal, else the first offset where they differ (a readable failure, not two binary dumps).
int64_t first_difference(const std::string& a, const std::string& b) {
  const auto m = std::mismatch(a.begin(), a.end(), b.begin(), b.end());
  return m.first == a.end() && m.second == b.end() ? -1 : int64_t(m.first - a.begin());
}

double loss_of(const Config& cfg, const ParamTable& t, const std::vector<float>& params, uint64_t seed) {
  const int B = 2, T = cfg.model.seq_len;
  Rng rng(seed);
  std::vector<int32_t> x(size_t(B * T)), y(size_t(B * T));
  for (auto& v : x) v = int32_t(rng.below(uint64_t(cfg.model.vocab_size)));
  for (auto& v : y) v = int32_t(rng.below(uint64_t(cfg.model.vocab_size)));
  CpuGpt<float> model(cfg, t, B);
  return model.forward(params.data(), x.data(), y.data(), B, T);
}

std::vector<float> load_ckpt(const std::string& dir, Config* cfg_out) {
  const Config cfg = from_json(load_state_json(dir).at("config"), "state.json");
  const ParamTable t = build_gpt_params(cfg);
  std::vector<float> params(size_t(t.total()));
  load_model_weights(dir, t, params);
  if (cfg_out) *cfg_out = cfg;
  return params;
}

}  // namespace

TEST_CASE("llm.c import: fp32 v3 and bf16 v5 files give our weights and the same loss", "[io]") {
  const Dims d;
  const bool bf16 = GENERATE(false, true);
  const uint64_t seed = 71;
  CAPTURE(bf16, seed);
  const Config cfg = small_config(d);
  const ParamTable t = build_gpt_params(cfg);
  const auto w = random_weights(cfg, seed, bf16);
  const std::vector<float> direct = flat_params(t, w);

  TempDir tmp;
  pg::test::spit(tmp / "m.bin", llmc_bytes(d, w, bf16 ? 5 : 3));
  const Config got = import_llmc(tmp / "m.bin", tmp / "ckpt", default_config({"train.threads=1"}));
  REQUIRE(got.model == cfg.model);
  Config saved;
  const std::vector<float> imported = load_ckpt(tmp / "ckpt", &saved);
  REQUIRE(saved.model == cfg.model);
  for (const auto& p : t.entries()) {
    INFO(p.name);
    REQUIRE(std::equal(w.at(p.name).begin(), w.at(p.name).end(), imported.begin() + p.offset));
  }
  REQUIRE(loss_of(cfg, t, imported, seed + 1) == loss_of(cfg, t, direct, seed + 1));
  const auto st = load_state_json(tmp / "ckpt");
  REQUIRE(st.at("step") == 0);
  REQUIRE(st.at("source").at("padded_vocab_size") == d.Vp);
}

TEST_CASE("llm.c import: bad magic, version, truncation and header mismatches are one-line errors", "[io]") {
  const Dims d;
  const Config cfg = small_config(d);
  const std::string good = llmc_bytes(d, random_weights(cfg, 5, false), 3);
  TempDir tmp;
  const std::string f = tmp / "m.bin";
  auto import = [&](std::string bytes) {
    pg::test::spit(f, bytes);
    io::read_llmc_model(f);
  };
  auto with_header = [&](int index, int32_t value) {
    std::string b = good;
    std::memcpy(b.data() + 4 * index, &value, 4);
    return b;
  };
  REQUIRE_NOTHROW(import(good));
  REQUIRE_THROWS_WITH(import(with_header(0, 20240520)), Contains("m.bin") && Contains("bad magic 20240520"));
  REQUIRE_THROWS_WITH(import(with_header(1, 4)), Contains("version 4") && Contains("3 (fp32) or 5 (bf16)"));
  REQUIRE_THROWS_WITH(import(good.substr(0, good.size() - 4)), Contains("truncated"));
  REQUIRE_THROWS_WITH(import(good.substr(0, 100)), Contains("truncated"));
  REQUIRE_THROWS_WITH(import(good + "xxxx"), Contains("4 bytes after the last tensor"));
  // A header that disagrees with the tensors: one more layer, or a bf16 claim on fp32 data.
  REQUIRE_THROWS_WITH(import(with_header(4, d.L + 1)), Contains("truncated"));
  REQUIRE_THROWS_WITH(import(with_header(1, 5)), Contains("after the last tensor"));
  REQUIRE_THROWS_WITH(import(with_header(5, 3)), Contains("not divisible by NH = 3"));
  REQUIRE_THROWS_WITH(import(with_header(7, d.V - 1)), Contains("Vp = 36 is smaller than V = 37"));
  REQUIRE_THROWS_WITH(import(with_header(6, 0)), Contains("header C = 0"));
  // The import command adds nothing to a failed read and leaves no directory behind.
  pg::test::spit(f, with_header(0, 1));
  REQUIRE_THROWS_AS(import_llmc(f, tmp / "ckpt", default_config()), UserError);
  REQUIRE_FALSE(std::filesystem::exists(tmp / "ckpt"));
  pg::test::spit(f, good);
  std::filesystem::create_directories(tmp / "full");
  pg::test::spit(tmp / "full/x", "x");
  REQUIRE_THROWS_WITH(import_llmc(f, tmp / "full", default_config()), Contains("not empty"));
}

TEST_CASE("llm.c round trip: file -> checkpoint -> file is byte-identical (fp32 and bf16)", "[io]") {
  const Dims d;
  const bool bf16 = GENERATE(false, true);
  CAPTURE(bf16);
  const Config cfg = small_config(d);
  const std::string bytes = llmc_bytes(d, random_weights(cfg, 9, bf16), bf16 ? 5 : 3);
  TempDir tmp;
  pg::test::spit(tmp / "in.bin", bytes);
  import_llmc(tmp / "in.bin", tmp / "ckpt", default_config());
  export_llmc(tmp / "ckpt", tmp / "out.bin", bf16);
  REQUIRE(first_difference(pg::test::slurp(tmp / "out.bin"), bytes) == -1);
  if (bf16) {  // the fp32 file of bf16 weights holds the same values, widened
    export_llmc(tmp / "ckpt", tmp / "wide.bin", false);
    REQUIRE(first_difference(pg::test::slurp(tmp / "wide.bin"), llmc_bytes(d, random_weights(cfg, 9, true), 3)) == -1);
  }
}

TEST_CASE("llm.c import drops wte's padding rows; export pads a trained model to a multiple of 128", "[io]") {
  const Dims d;
  const Config cfg = small_config(d);
  const auto w = random_weights(cfg, 13, false);
  TempDir tmp;
  pg::test::spit(tmp / "in.bin", llmc_bytes(d, w, 3, /*pad=*/0.5f));
  import_llmc(tmp / "in.bin", tmp / "ckpt", default_config());
  export_llmc(tmp / "ckpt", tmp / "out.bin", false);
  REQUIRE(first_difference(pg::test::slurp(tmp / "out.bin"), llmc_bytes(d, w, 3, 0.0f)) == -1);

  // A checkpoint with no llm.c origin gets llm.c's own padding.
  const ParamTable t = build_gpt_params(cfg);
  const std::vector<float> params = flat_params(t, w);
  std::vector<float> zeros(params.size(), 0.0f);
  save_checkpoint(tmp / "run", 3, t, params, {}, {{"step", 3}, {"config", to_json(cfg)}});
  export_llmc(tmp / "run/checkpoints/00000003", tmp / "trained.bin", false);
  const io::LlmcModel m = io::read_llmc_model(tmp / "trained.bin");
  REQUIRE(m.header.padded_vocab_size == 128);
  Dims d128 = d;
  d128.Vp = 128;
  REQUIRE(first_difference(pg::test::slurp(tmp / "trained.bin"), llmc_bytes(d128, w, 3)) == -1);
}

TEST_CASE("hf export: GPT-2 names, Conv1D [in, out] orientation and config.json", "[io]") {
  const Dims d;
  const Config cfg = small_config(d);
  const ParamTable t = build_gpt_params(cfg);
  const auto w = random_weights(cfg, 17, false);
  const std::vector<float> params = flat_params(t, w);
  TempDir tmp;
  std::vector<float> zeros(params.size(), 0.0f);
  save_checkpoint(tmp / "run", 5, t, params, {}, {{"step", 5}, {"config", to_json(cfg)}});
  export_hf(tmp / "run/checkpoints/00000005", tmp / "hf");

  io::SafetensorsReader r(tmp / "hf/model.safetensors");
  REQUIRE(r.metadata().at("format") == "pt");
  REQUIRE(r.names().size() == size_t(2 + 12 * d.L + 2));
  REQUIRE_FALSE(r.has("lm_head.weight"));
  const int64_t C = d.C, F = 4 * C;
  auto read = [&](const std::string& name, std::vector<int64_t> shape) {
    INFO(name);
    int64_t n = 1;
    for (auto s : shape) n *= s;
    std::vector<float> v(static_cast<size_t>(n));
    r.read_into(name, v.data(), "F32", shape);
    return v;
  };
  REQUIRE(read("transformer.wte.weight", {d.V, C}) == w.at("wte"));
  REQUIRE(read("transformer.wpe.weight", {d.T, C}) == w.at("wpe"));
  REQUIRE(read("transformer.ln_f.bias", {C}) == w.at("ln_f.bias"));
  for (int l = 0; l < d.L; ++l) {
    const std::string h = "transformer.h." + std::to_string(l) + ".", p = "h." + std::to_string(l) + ".";
    REQUIRE(read(h + "ln_1.weight", {C}) == w.at(p + "ln_1.weight"));
    REQUIRE(read(h + "ln_2.bias", {C}) == w.at(p + "ln_2.bias"));
    // Conv1D: y = x W + b, W [in, out]; ours: y = x W^T + b, W [out, in].
    const auto qkv = read(h + "attn.c_attn.weight", {C, 3 * C});
    const auto qkv_b = read(h + "attn.c_attn.bias", {3 * C});
    for (int part = 0; part < 3; ++part) {
      const std::string name = p + "attn." + "qkv"[part];
      const auto& wp = w.at(name + ".weight");
      for (int64_t o = 0; o < C; ++o) {
        REQUIRE(qkv_b[size_t(part * C + o)] == w.at(name + ".bias")[size_t(o)]);
        for (int64_t i = 0; i < C; ++i) REQUIRE(qkv[size_t(i * 3 * C + part * C + o)] == wp[size_t(o * C + i)]);
      }
    }
    auto check_t = [&](const std::string& hf, const std::string& ours, int64_t out, int64_t in) {
      const auto got = read(hf, {in, out});
      const auto& want = w.at(ours);
      for (int64_t o = 0; o < out; ++o)
        for (int64_t i = 0; i < in; ++i) REQUIRE(got[size_t(i * out + o)] == want[size_t(o * in + i)]);
    };
    check_t(h + "attn.c_proj.weight", p + "attn.o.weight", C, C);
    check_t(h + "mlp.c_fc.weight", p + "mlp.fc.weight", F, C);
    check_t(h + "mlp.c_proj.weight", p + "mlp.proj.weight", C, F);
    REQUIRE(read(h + "mlp.c_fc.bias", {F}) == w.at(p + "mlp.fc.bias"));
    REQUIRE(read(h + "mlp.c_proj.bias", {C}) == w.at(p + "mlp.proj.bias"));
    REQUIRE(read(h + "attn.c_proj.bias", {C}) == w.at(p + "attn.o.bias"));
  }

  std::ifstream f(tmp / "hf/config.json");
  const auto j = nlohmann::json::parse(f);
  REQUIRE(j.at("architectures") == nlohmann::json::array({"GPT2LMHeadModel"}));
  REQUIRE(j.at("model_type") == "gpt2");
  REQUIRE(j.at("n_embd") == C);
  REQUIRE(j.at("n_layer") == d.L);
  REQUIRE(j.at("n_head") == d.NH);
  REQUIRE(j.at("n_positions") == d.T);
  REQUIRE(j.at("vocab_size") == d.V);
  REQUIRE(j.at("n_inner").is_null());
  REQUIRE(j.at("activation_function") == "gelu_new");
  REQUIRE(j.at("layer_norm_epsilon") == 1e-5);
  REQUIRE(j.at("tie_word_embeddings") == true);
  std::ifstream pj(tmp / "hf/polargpt.json");
  REQUIRE(nlohmann::json::parse(pj).at("step") == 5);
}

TEST_CASE("exports refuse configs GPT-2 cannot express, naming the field", "[io]") {
  // The moe and lipschitz variants are valid configs only with other fields set (moe.n_expert;
  // no norms, biases or tied embeddings); the refusal must still name model.variant first.
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"model.norm=rmsnorm"}, "model.norm"},
      {{"model.pos=rope"}, "model.pos"},
      {{"model.activation=relu2"}, "model.activation"},
      {{"model.qk_norm=true"}, "model.qk_norm"},
      {{"model.logit_softcap=30"}, "model.logit_softcap"},
      {{"model.tie_embeddings=false"}, "model.tie_embeddings"},
      {{"model.bias=false"}, "model.bias"},
      {{"model.variant=moe", "moe.n_expert=4"}, "model.variant"},
      {{"model.variant=lipschitz", "model.norm=none", "model.bias=false", "model.tie_embeddings=false"},
       "model.variant"},
  };
  for (const auto& [sets, key] : cases) {
    INFO(sets.front());
    const Config cfg = default_config(sets);
    REQUIRE_THROWS_WITH(check_gpt2_compatible(cfg, "hf"), Catch::StartsWith(key + ":"));
    REQUIRE_THROWS_WITH(check_gpt2_compatible(cfg, "llmc"), Catch::StartsWith(key + ":"));
  }
  // Hugging Face expresses d_ff through n_inner; llm.c's layout has no room for it.
  const Config wide = default_config({"model.d_ff=96"});
  REQUIRE_NOTHROW(check_gpt2_compatible(wide, "hf"));
  REQUIRE(hf_config_json(wide).at("n_inner") == 96);
  REQUIRE_THROWS_WITH(check_gpt2_compatible(wide, "llmc"), Catch::StartsWith("model.d_ff:"));

  // Through a checkpoint: nothing is written.
  const Config cfg = default_config({"model.norm=rmsnorm", "model.n_layer=1", "model.d_model=16", "model.n_head=2",
                                     "model.vocab_size=20", "model.seq_len=8"});
  const ParamTable t = build_gpt_params(cfg);
  std::vector<float> zeros(size_t(t.total()), 0.0f);
  TempDir tmp;
  save_checkpoint(tmp / "run", 1, t, zeros, {}, {{"step", 1}, {"config", to_json(cfg)}});
  REQUIRE_THROWS_WITH(export_hf(tmp / "run/checkpoints/00000001", tmp / "hf"), Catch::StartsWith("model.norm:"));
  REQUIRE_FALSE(std::filesystem::exists(tmp / "hf"));
  REQUIRE_THROWS_WITH(export_llmc(tmp / "run/checkpoints/00000001", tmp / "m.bin", false),
                      Catch::StartsWith("model.norm:"));
  REQUIRE_FALSE(std::filesystem::exists(tmp / "m.bin"));
}
