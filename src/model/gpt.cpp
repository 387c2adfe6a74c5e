#include "model/gpt.hpp"

#include <cmath>
#include <string>

#include "core/error.hpp"
#include "core/rng.hpp"
#include "optim/param_split.hpp"

namespace pg {

namespace {

// One MoE block's tensors: the router (AdamW), the selection bias (balance = bias: state nudged
// by the trainer, never by gradients, which are zero), and the experts as 3-D tensors with each
// expert its own [rows, cols] matrix (Muon orthogonalises them one by one).
void add_moe_block(ParamTable& t, const Config& cfg, const std::string& p) {
  const int64_t C = cfg.model.d_model, E = cfg.moe.n_expert, Fe = cfg.d_ff_expert(), S = cfg.moe.n_shared;
  t.add(p + "router.weight", {E, C}, Role::router, true);
  if (cfg.moe.balance == "bias") t.add(p + "router.score_bias", {E}, Role::bias, false);
  auto experts = [&](const std::string& q, int64_t n) {
    t.add(q + "fc.weight", {n, Fe, C}, Role::expert, true);
    if (cfg.model.bias) t.add(q + "fc.bias", {n, Fe}, Role::bias, false);
    t.add(q + "proj.weight", {n, C, Fe}, Role::expert, true);
    if (cfg.model.bias) t.add(q + "proj.bias", {n, C}, Role::bias, false);
  };
  experts(p + "experts.", E);
  if (S > 0) experts(p + "shared.", S);
}

}  // namespace

ParamTable build_gpt_params(const Config& cfg) {
  const auto& m = cfg.model;
  const int64_t C = m.d_model, V = m.vocab_size, F = cfg.d_ff(), T = m.seq_len;
  const bool ln = m.norm == "layernorm", has_norm = m.norm != "none";
  ParamTable t;
  t.add("wte", {V, C}, Role::embed, true);
  if (m.pos == "learned") t.add("wpe", {T, C}, Role::pos_embed, true);
  auto norm = [&](const std::string& p) {
    if (!has_norm) return;
    t.add(p + ".weight", {C}, Role::norm, false);
    if (ln && m.bias) t.add(p + ".bias", {C}, Role::bias, false);
  };
  auto linear = [&](const std::string& p, int64_t out, int64_t in, Role role) {
    t.add(p + ".weight", {out, in}, role, true);
    if (m.bias) t.add(p + ".bias", {out}, Role::bias, false);
  };
  for (int l = 0; l < m.n_layer; ++l) {
    const std::string h = "h." + std::to_string(l);
    norm(h + ".ln_1");
    // q, k, v weights first and adjacent (fused-GEMM friendly), then their biases.
    t.add(h + ".attn.q.weight", {C, C}, Role::attn, true);
    t.add(h + ".attn.k.weight", {C, C}, Role::attn, true);
    t.add(h + ".attn.v.weight", {C, C}, Role::attn, true);
    if (m.bias) {
      t.add(h + ".attn.q.bias", {C}, Role::bias, false);
      t.add(h + ".attn.k.bias", {C}, Role::bias, false);
      t.add(h + ".attn.v.bias", {C}, Role::bias, false);
    }
    linear(h + ".attn.o", C, C, Role::attn);
    norm(h + ".ln_2");
    if (cfg.is_moe_layer(l)) {
      add_moe_block(t, cfg, h + ".moe.");
    } else {
      linear(h + ".mlp.fc", F, C, Role::mlp);
      linear(h + ".mlp.proj", C, F, Role::mlp);
    }
  }
  norm("ln_f");
  if (!m.tie_embeddings) t.add("lm_head.weight", {V, C}, Role::head, true);

  assign_optimizers(t, cfg.optim);
  return t;
}

void init_gpt_params(const Config& cfg, const ParamTable& table, std::span<float> params, uint64_t seed) {
  Rng rng(seed);
  const double std0 = cfg.model.init_std;
  const double std_resid = std0 / std::sqrt(2.0 * cfg.model.n_layer);
  for (float& x : params) x = 0.0f;
  for (const auto& p : table.entries()) {
    float* w = params.data() + p.offset;
    if (p.role == Role::norm) {
      for (int64_t i = 0; i < p.numel; ++i) w[i] = 1.0f;
    } else if (p.role == Role::bias) {
      // zeros
    } else {
      const bool resid = p.name.ends_with(".attn.o.weight") || p.name.ends_with(".proj.weight");
      // lipschitz: embedding rows start at RMS ~1, the edge of their max-norm ball (docs/lipschitz.md).
      const bool lip_embed = cfg.model.variant == "lipschitz" && (p.role == Role::embed || p.role == Role::pos_embed);
      const double s = lip_embed ? 1.0 : resid ? std_resid : std0;
      for (int64_t i = 0; i < p.numel; ++i) w[i] = float(s * rng.normal());
    }
  }
}

GptOffsets gpt_offsets(const Config& cfg, const ParamTable& t) {
  auto off = [&](const std::string& name) {
    const ParamInfo* p = t.find(name);
    return p ? p->offset : int64_t(-1);
  };
  GptOffsets o;
  o.wte = off("wte"), o.wpe = off("wpe"), o.lnf_w = off("ln_f.weight"), o.lnf_b = off("ln_f.bias");
  o.head = cfg.model.tie_embeddings ? o.wte : off("lm_head.weight");
  for (int l = 0; l < cfg.model.n_layer; ++l) {
    const std::string h = "h." + std::to_string(l);
    GptLayerOffsets w;
    w.ln1_w = off(h + ".ln_1.weight"), w.ln1_b = off(h + ".ln_1.bias");
    w.q = off(h + ".attn.q.weight"), w.k = off(h + ".attn.k.weight"), w.v = off(h + ".attn.v.weight");
    w.qb = off(h + ".attn.q.bias"), w.kb = off(h + ".attn.k.bias"), w.vb = off(h + ".attn.v.bias");
    w.o = off(h + ".attn.o.weight"), w.ob = off(h + ".attn.o.bias");
    w.ln2_w = off(h + ".ln_2.weight"), w.ln2_b = off(h + ".ln_2.bias");
    w.fc = off(h + ".mlp.fc.weight"), w.fcb = off(h + ".mlp.fc.bias");
    w.proj = off(h + ".mlp.proj.weight"), w.projb = off(h + ".mlp.proj.bias");
    PG_CHECK(w.q >= 0 && w.o >= 0 && (cfg.is_moe_layer(l) || (w.fc >= 0 && w.proj >= 0)),
             "parameter table lacks layer " + h);
    o.layers.push_back(w);
  }
  PG_CHECK(o.wte >= 0 && o.head >= 0, "parameter table lacks the embedding or head");
  return o;
}

}  // namespace pg
