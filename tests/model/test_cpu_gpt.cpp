// Whole-model gradient check: the hand-written backward of CpuGpt<double> against central finite
// differences of its forward, for every parameter tensor, over several architecture variants.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "common/model_gradcheck.hpp"
#include "config/config.hpp"
#include "core/rng.hpp"
#include "model/cpu_gpt.hpp"
#include "model/gpt.hpp"

using namespace pg;
using pg::test::tiny_model;
using pg::test::worst_grad_error;

TEST_CASE("cpu_gpt: whole-model gradients match finite differences in float64", "[model]") {
  const std::vector<std::vector<std::string>> variants = {
      {},  // GPT-2 style: layernorm, learned positions, gelu, tied, biases
      {"model.norm=rmsnorm", "model.pos=rope", "model.activation=relu2", "model.qk_norm=true",
       "model.tie_embeddings=false", "model.bias=false"},
      {"model.logit_softcap=3.0", "model.pos=rope", "model.d_ff=0"},
      {"model.norm=none", "model.bias=false"},
      // Lipschitz-certified variant: convex residuals, attn_scale/d_head logits, GELU / 1.129,
      // attention / 3. A large attn_scale keeps the q, k gradients well above finite-difference
      // noise (with attn_scale 1 they are ~1e-4 and the relative error is noise-bound at ~5e-6).
      {"model.variant=lipschitz", "model.norm=none", "model.bias=false", "model.tie_embeddings=false",
       "model.pos=rope", "model.attn_scale=16"},
      {"model.variant=lipschitz", "model.norm=none", "model.bias=false", "model.tie_embeddings=false",
       "model.attn_scale=24"},
  };
  uint64_t seed = 100;
  for (const auto& v : variants) {
    const Config cfg = tiny_model(v);
    std::string worst_name;
    const double err = worst_grad_error(cfg, ++seed, &worst_name);
    CAPTURE(seed, worst_name, err);
    INFO("variant: " << nlohmann::json(v).dump());
    REQUIRE(err < 1e-6);
  }
}

TEST_CASE("cpu_gpt: fp32 forward agrees with float64 and the untrained loss is near log V", "[model]") {
  const Config cfg = tiny_model({"model.vocab_size=50", "model.init_std=0.02"});
  const ParamTable table = build_gpt_params(cfg);
  std::vector<float> Pf(size_t(table.total()));
  init_gpt_params(cfg, table, Pf, 7);
  std::vector<double> Pd(Pf.begin(), Pf.end());
  const int B = 3, T = cfg.model.seq_len;
  Rng rng(3);
  std::vector<int32_t> x(static_cast<size_t>(B * T)), y(static_cast<size_t>(B * T));
  for (auto& t : x) t = int32_t(rng.below(50));
  for (auto& t : y) t = int32_t(rng.below(50));
  CpuGpt<float> mf(cfg, table, B);
  CpuGpt<double> md(cfg, table, B);
  const double lf = mf.forward(Pf.data(), x.data(), y.data(), B, T);
  const double ld = md.forward(Pd.data(), x.data(), y.data(), B, T);
  REQUIRE(std::abs(lf - ld) / ld < 1e-5);
  REQUIRE(std::abs(ld - std::log(50.0)) < 0.1);
}

TEST_CASE("cpu_gpt: the model is causal (a later token never changes earlier logits)", "[model]") {
  const Config cfg = tiny_model({"model.pos=rope"});
  const ParamTable table = build_gpt_params(cfg);
  std::vector<float> P(size_t(table.total()));
  init_gpt_params(cfg, table, P, 11);
  const int T = cfg.model.seq_len, V = cfg.model.vocab_size;
  std::vector<int32_t> a = {1, 2, 3, 4, 5}, b = {1, 2, 3, 4, 9};
  CpuGpt<float> m(cfg, table, 1);
  m.forward(P.data(), a.data(), nullptr, 1, T);
  std::vector<float> la(m.logits(), m.logits() + T * V);
  m.forward(P.data(), b.data(), nullptr, 1, T);
  for (int i = 0; i < (T - 1) * V; ++i) REQUIRE(m.logits()[i] == la[size_t(i)]);
  bool last_differs = false;
  for (int i = (T - 1) * V; i < T * V; ++i) last_differs |= m.logits()[i] != la[size_t(i)];
  REQUIRE(last_differs);
}

TEST_CASE("gpt params: Muon takes exactly the 2-D hidden matrices", "[model]") {
  Config cfg = tiny_model({"optim.kind=muon", "model.tie_embeddings=false"});
  const ParamTable t = build_gpt_params(cfg);
  int muon = 0;
  for (const auto& p : t.entries()) {
    const bool hidden = p.name.find(".attn.") != std::string::npos || p.name.find(".mlp.") != std::string::npos;
    REQUIRE(p.muon == (hidden && p.name.ends_with(".weight")));
    muon += p.muon;
  }
  REQUIRE(muon == 2 * 6);
  REQUIRE_FALSE(t.get("wte").muon);
  REQUIRE_FALSE(t.get("lm_head.weight").muon);
}
