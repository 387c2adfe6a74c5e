// Which optimizer owns each parameter (src/optim/param_split.hpp): by role, then by the
// include/exclude name patterns; bad patterns are one-line errors naming the key.
#include <catch2/catch.hpp>

#include <set>
#include <string>

#include "config/config.hpp"
#include "core/error.hpp"
#include "model/gpt.hpp"
#include "optim/optimizer.hpp"
#include "optim/param_split.hpp"

using namespace pg;

namespace {

std::set<std::string> muon_names(const ParamTable& t) {
  std::set<std::string> s;
  for (const auto& p : t.entries())
    if (p.muon) s.insert(p.name);
  return s;
}

Config gpt(std::vector<std::string> sets) {
  std::vector<std::string> base = {"model.n_layer=2", "model.d_model=16", "model.n_head=2", "model.vocab_size=32",
                                   "model.seq_len=8", "model.tie_embeddings=false"};
  base.insert(base.end(), sets.begin(), sets.end());
  return default_config(base);
}

std::string error_of(const std::vector<std::string>& sets) {
  try {
    build_gpt_params(gpt(sets));
  } catch (const UserError& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("split: by role, hidden matrices on Muon and everything else on AdamW", "[optim]") {
  const ParamTable t = build_gpt_params(gpt({"optim.kind=muon"}));
  std::set<std::string> expect;
  for (int l = 0; l < 2; ++l)
    for (const char* w : {"attn.q", "attn.k", "attn.v", "attn.o", "mlp.fc", "mlp.proj"})
      expect.insert("h." + std::to_string(l) + "." + w + ".weight");
  REQUIRE(muon_names(t) == expect);  // not wte, wpe, lm_head, norms, biases

  REQUIRE(muon_names(build_gpt_params(gpt({"optim.kind=adamw"}))).empty());
  // adamw puts everything on AdamW even when patterns are given
  REQUIRE(muon_names(build_gpt_params(gpt({"optim.kind=adamw", "optim.muon_include=wte"}))).empty());
}

TEST_CASE("split: 3-D expert tensors go to Muon, the router and 1-D tensors to AdamW", "[optim]") {
  ParamTable t;
  t.add("h.0.moe.router.weight", {4, 16}, Role::router, true);
  t.add("h.0.moe.w_in", {4, 64, 16}, Role::expert, true);
  t.add("h.0.moe.w_out", {4, 16, 64}, Role::expert, true);
  t.add("h.0.moe.b_in", {4, 64}, Role::bias, false);
  t.add("h.0.ln_2.weight", {16}, Role::norm, false);
  OptimConfig o;
  o.kind = "muon";
  assign_optimizers(t, o);
  REQUIRE(muon_names(t) == std::set<std::string>{"h.0.moe.w_in", "h.0.moe.w_out"});
  o.muon_include = "h.0.moe.router.*";
  assign_optimizers(t, o);
  REQUIRE(muon_names(t).count("h.0.moe.router.weight") == 1);
}

TEST_CASE("split: include and exclude patterns, exclude winning", "[optim]") {
  auto names = [](std::vector<std::string> sets) {
    sets.insert(sets.begin(), "optim.kind=muon");
    return muon_names(build_gpt_params(gpt(sets)));
  };
  const auto base = names({});
  auto with_wte = base;
  with_wte.insert("wte");
  CHECK(names({"optim.muon_include=wte"}) == with_wte);
  with_wte.insert("lm_head.weight");
  CHECK(names({"optim.muon_include= wte , lm_head.* "}) == with_wte);

  std::set<std::string> no_layer0;
  for (const auto& n : base)
    if (!n.starts_with("h.0.")) no_layer0.insert(n);
  CHECK(names({"optim.muon_exclude=h.0.*"}) == no_layer0);
  // `*` crosses dots: every attention matrix of every layer
  std::set<std::string> mlp_only;
  for (const auto& n : base)
    if (n.find(".mlp.") != std::string::npos) mlp_only.insert(n);
  CHECK(names({"optim.muon_exclude=*.attn.*"}) == mlp_only);
  CHECK(names({"optim.muon_include=wte", "optim.muon_exclude=wte,h.0.*"}) == no_layer0);

  CHECK(split_patterns(" a, ,b,") == std::vector<std::string>{"a", "b"});
  CHECK(split_patterns("").empty());
  CHECK(glob_match("h.?.attn.[qk].weight", "h.3.attn.k.weight"));
  CHECK_FALSE(glob_match("h.?.attn.[qk].weight", "h.3.attn.v.weight"));
}

TEST_CASE("split: patterns that match nothing or name a vector are refused with one line", "[optim]") {
  const std::string none = error_of({"optim.kind=muon", "optim.muon_exclude=h.9.*"});
  CHECK(none == "optim.muon_exclude: pattern 'h.9.*' matches no parameter name");
  const std::string vec = error_of({"optim.kind=muon", "optim.muon_include=*.bias"});
  CHECK_THAT(vec, Catch::StartsWith("optim.muon_include: pattern '*.bias' matches ") &&
                      Catch::Contains("fewer than 2 dimensions"));
  CHECK(vec.find('\n') == std::string::npos);
}

TEST_CASE("split: the start-up description counts tensors and parameters per optimizer", "[optim]") {
  const Config cfg = gpt({"optim.kind=muon"});
  const ParamTable t = build_gpt_params(cfg);
  const auto opt = make_optimizer(cfg.optim, t);
  const auto lines = opt->describe();
  REQUIRE(lines.size() == 2);
  // 2 layers x (4 x 16x16 + 64x16 + 16x64) = 2 x 3072 = 6144 Muon parameters
  CHECK_THAT(lines[0], Catch::StartsWith("muon: 12 tensors, 12 matrices, 6144 parameters"));
  CHECK_THAT(lines[0], Catch::Contains("2 shape groups: 8 x 16x16, 4 x 16x64"));
  CHECK_THAT(lines[1], Catch::StartsWith("adamw: ") &&
                           Catch::Contains(std::to_string(t.n_params() - 6144) + " parameters"));
  const Config a = gpt({});
  const ParamTable ta = build_gpt_params(a);
  const auto lines_a = make_optimizer(a.optim, ta)->describe();
  REQUIRE(lines_a.size() == 1);
  CHECK_THAT(lines_a[0], Catch::StartsWith("adamw: " + std::to_string(ta.entries().size()) + " tensors, " +
                                           std::to_string(ta.n_params()) + " parameters"));
}
