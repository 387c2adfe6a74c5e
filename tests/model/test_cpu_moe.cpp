// The MoE model end to end on the CPU: config validation, the parameter plan (3-D expert
// tensors, roles, Muon flags), whole-model float64 gradient checks over MoE variants, equality
// with the dense MLP for one expert, thread-count determinism, the auxiliary-loss-free bias
// update and its balancing effect, and a short training run whose loss falls.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "backend/cpu/parallel.hpp"
#include "common/model_gradcheck.hpp"
#include "common/synthetic_data.hpp"
#include "common/temp_dir.hpp"
#include "config/config.hpp"
#include "core/error.hpp"
#include "core/rng.hpp"
#include "io/checkpoint_dir.hpp"
#include "io/jsonl.hpp"
#include "model/cpu_gpt.hpp"
#include "model/cpu_moe.hpp"
#include "model/gpt.hpp"
#include "model/moe_balance.hpp"
#include "train/checkpoint.hpp"
#include "train/engine.hpp"
#include "train/trainer.hpp"

using namespace pg;
using pg::test::tiny_model;

namespace {

std::vector<std::string> moe(std::vector<std::string> extra) {
  std::vector<std::string> s = {"model.variant=moe", "moe.n_expert=4", "moe.top_k=2", "moe.d_ff_expert=6"};
  s.insert(s.end(), extra.begin(), extra.end());
  return s;
}

std::string user_error(const std::vector<std::string>& sets) {
  try {
    default_config(sets);
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("moe config: cross-field errors are one line naming the keys", "[moe]") {
  CHECK(user_error(moe({"moe.top_k=5"})).find("moe.top_k (5) must be <= moe.n_expert (4)") != std::string::npos);
  CHECK(user_error({"moe.n_expert=4"}).find("needs model.variant = moe") != std::string::npos);
  CHECK(user_error({"model.variant=moe"}).find("moe.n_expert >= 1") != std::string::npos);
  CHECK(user_error(moe({"moe.every=5"})).find("moe.every (5) must be <= model.n_layer (4)") != std::string::npos);
  CHECK(user_error(moe({"moe.balance=loss"})).find("moe.balance") != std::string::npos);
  CHECK(user_error(moe({"moe.capacity_factor=-1"})).find("moe.capacity_factor") != std::string::npos);
  CHECK(user_error(moe({})).empty());
}

TEST_CASE("moe params: 3-D expert tensors, router and bias roles, Muon takes each expert matrix", "[moe]") {
  const Config cfg = tiny_model(moe({"moe.every=2", "moe.n_shared=1", "moe.balance=bias", "optim.kind=muon",
                                     "model.n_layer=4"}));
  const ParamTable t = build_gpt_params(cfg);
  CHECK(t.find("h.0.mlp.fc.weight") != nullptr);  // every = 2: blocks 1 and 3 are MoE
  CHECK(t.find("h.0.moe.router.weight") == nullptr);
  CHECK(t.find("h.1.mlp.fc.weight") == nullptr);
  for (int l : {1, 3}) {
    const std::string h = "h." + std::to_string(l) + ".moe.";
    const ParamInfo& fc = t.get(h + "experts.fc.weight");
    CHECK(fc.shape == std::vector<int64_t>{4, 6, 8});
    CHECK((fc.role == Role::expert && fc.muon && fc.rows() == 6 && fc.cols() == 8));
    const ParamInfo& proj = t.get(h + "experts.proj.weight");
    CHECK(proj.shape == std::vector<int64_t>{4, 8, 6});
    CHECK(t.get(h + "shared.fc.weight").shape == std::vector<int64_t>{1, 6, 8});
    const ParamInfo& r = t.get(h + "router.weight");
    CHECK((r.role == Role::router && !r.muon && r.shape == std::vector<int64_t>{4, 8}));
    const ParamInfo& b = t.get(h + "router.score_bias");
    CHECK((b.role == Role::bias && !b.muon && !b.weight_decay));
  }
  // FLOPs count the active experts: top_k of the 4 routed expert MLPs (weights and biases), the
  // shared one, the router and its selection bias, in place of a dense MLP, per MoE block.
  const double expert = 2.0 * 8 * 6 + 6 + 8, dense_mlp = 2.0 * 8 * 12 + 12 + 8;
  const double per_moe_block = 6.0 * (8 * 4 + 4 + expert * (2 + 1) - dense_mlp);
  const Config dense = tiny_model({"model.n_layer=4"});
  CHECK(flops_per_token(cfg, t) == Approx(flops_per_token(dense, build_gpt_params(dense)) + 2 * per_moe_block));
}

TEST_CASE("cpu_moe: whole-model gradients match finite differences in float64", "[moe]") {
  const std::vector<std::vector<std::string>> variants = {
      moe({}),  // every block MoE, top-2, aux + z losses, dropless
      moe({"moe.every=2", "moe.n_shared=1", "moe.balance=bias", "moe.capacity_factor=0.5"}),  // drops
      moe({"moe.top_k=1", "moe.capacity_factor=1.0", "model.activation=relu2", "model.bias=false",
           "moe.aux_loss_coef=0.5", "moe.z_loss_coef=0.1"}),
      moe({"moe.n_expert=3", "moe.top_k=3", "moe.n_shared=2", "model.norm=rmsnorm", "model.pos=rope"}),
  };
  uint64_t seed = 300;
  for (const auto& v : variants) {
    const Config cfg = tiny_model(v);
    std::string worst_name;
    const double err = test::worst_grad_error(cfg, ++seed, &worst_name);
    CAPTURE(seed, worst_name, err);
    INFO("variant: " << nlohmann::json(v).dump());
    REQUIRE(err < 1e-6);
  }
}

TEST_CASE("cpu_moe: capacity drops tokens and the stats count them", "[moe]") {
  const Config cfg = tiny_model(moe({"moe.capacity_factor=0.5"}));
  const ParamTable table = build_gpt_params(cfg);
  std::vector<double> P(size_t(table.total()));
  Rng rng(5);
  for (double& p : P) p = 0.5 * rng.normal();
  std::vector<int32_t> x(10), y(10);
  for (auto& t : x) t = int32_t(rng.below(13));
  CpuGpt<double> m(cfg, table, 2);
  m.forward(P.data(), x.data(), y.data(), 2, 5);
  for (const MoeLayerStats& s : m.moe_stats()) {
    CHECK(s.assignments == 20);
    CHECK(s.dropped >= 20 - 4 * 3);  // capacity ceil(0.5·10·2/4) = 3 rows per expert
    int64_t sum = 0;
    for (int64_t c : s.load) sum += c;
    CHECK(sum == 20);
  }
  CHECK(m.moe_objective() > 0);
}

TEST_CASE("cpu_moe: one expert with top_k = 1 equals the dense MLP (loss and gradients)", "[moe]") {
  const Config dense = tiny_model({"model.d_ff=12"});
  const Config one = tiny_model({"model.variant=moe", "moe.n_expert=1", "moe.top_k=1", "moe.d_ff_expert=12",
                                 "moe.z_loss_coef=0"});
  const ParamTable td = build_gpt_params(dense), tm = build_gpt_params(one);
  std::vector<double> Pd(size_t(td.total())), Pm(size_t(tm.total()), 0.0);
  Rng rng(9);
  for (double& p : Pd) p = 0.3 * rng.normal();
  auto moe_name = [](std::string n) {
    for (const char* part : {"fc", "proj"})
      for (const char* kind : {".weight", ".bias"}) {
        const std::string from = std::string(".mlp.") + part + kind;
        if (n.ends_with(from)) return n.substr(0, n.size() - from.size()) + ".moe.experts." + part + kind;
      }
    return n;
  };
  for (const auto& p : td.entries()) {
    const ParamInfo& q = tm.get(moe_name(p.name));
    REQUIRE(q.numel == p.numel);
    std::copy_n(Pd.begin() + p.offset, p.numel, Pm.begin() + q.offset);
  }
  for (const auto& q : tm.entries())  // any router: one expert gets every token with gate 1
    if (q.role == Role::router)
      for (int64_t i = 0; i < q.numel; ++i) Pm[size_t(q.offset + i)] = rng.normal();
  std::vector<int32_t> x(10), y(10);
  for (auto& t : x) t = int32_t(rng.below(13));
  for (auto& t : y) t = int32_t(rng.below(13));
  CpuGpt<double> md(dense, td, 2), mm(one, tm, 2);
  const double ld = md.forward(Pd.data(), x.data(), y.data(), 2, 5);
  const double lm = mm.forward(Pm.data(), x.data(), y.data(), 2, 5);
  CHECK(lm == Approx(ld).epsilon(1e-13));
  std::vector<double> Gd(Pd.size(), 0.0), Gm(Pm.size(), 0.0);
  md.backward(Pd.data(), Gd.data(), 1.0);
  mm.backward(Pm.data(), Gm.data(), 1.0);
  for (const auto& p : td.entries()) {
    const ParamInfo& q = tm.get(moe_name(p.name));
    for (int64_t i = 0; i < p.numel; ++i) {
      INFO(p.name << "[" << i << "]");
      REQUIRE(Gm[size_t(q.offset + i)] == Approx(Gd[size_t(p.offset + i)]).margin(1e-13));
    }
  }
  for (const auto& q : tm.entries())
    if (q.role == Role::router)
      for (int64_t i = 0; i < q.numel; ++i) REQUIRE(std::abs(Gm[size_t(q.offset + i)]) < 1e-15);
}

TEST_CASE("cpu_moe: fp32 results are bit-identical for 1, 2 and 3 threads", "[moe]") {
  const Config cfg = tiny_model(moe({"moe.n_shared=1", "moe.capacity_factor=0.8", "model.d_model=16",
                                     "model.seq_len=16", "moe.n_expert=8"}));
  const ParamTable table = build_gpt_params(cfg);
  std::vector<float> P(size_t(table.total()));
  init_gpt_params(cfg, table, P, 3);
  const int B = 4, T = 16;
  Rng rng(4);
  std::vector<int32_t> x(size_t(B * T)), y(size_t(B * T));
  for (auto& t : x) t = int32_t(rng.below(13));
  for (auto& t : y) t = int32_t(rng.below(13));
  const int saved = cpu::num_threads();
  std::vector<std::vector<float>> grads;
  std::vector<double> losses;
  for (int threads : {1, 2, 3}) {
    cpu::set_num_threads(threads);
    CpuGpt<float> m(cfg, table, B);
    std::vector<float> G(P.size(), 0.0f);
    losses.push_back(m.forward(P.data(), x.data(), y.data(), B, T) + m.moe_objective());
    m.backward(P.data(), G.data(), 1.0);
    grads.push_back(G);
  }
  cpu::set_num_threads(saved);
  CHECK(losses[1] == losses[0]);
  CHECK(losses[2] == losses[0]);
  CHECK(grads[1] == grads[0]);
  CHECK(grads[2] == grads[0]);
}

TEST_CASE("moe balance: the bias moves by rate against each expert's load error", "[moe]") {
  const Config cfg = tiny_model(moe({"moe.balance=bias", "moe.bias_update_rate=0.01", "moe.every=2"}));
  const ParamTable table = build_gpt_params(cfg);
  std::vector<float> P(size_t(table.total()), 0.0f);
  MoeLayerStats s;
  s.layer = 1;
  s.load = {4, 2, 2, 0};  // loads 0.5, 0.25 (= uniform), 0.25, 0
  s.assignments = 8;
  MoeStepStats step;
  step.add({s});
  update_score_bias(cfg, table, P, step);
  const ParamInfo& b = table.get("h.1.moe.router.score_bias");
  CHECK(P[size_t(b.offset) + 0] == -0.01f);
  CHECK(P[size_t(b.offset) + 1] == 0.0f);
  CHECK(P[size_t(b.offset) + 2] == 0.0f);
  CHECK(P[size_t(b.offset) + 3] == 0.01f);
  nlohmann::json rec;
  step.write(rec);
  CHECK(rec.at("expert_load") == nlohmann::json::parse("[[0.5, 0.25, 0.25, 0.0]]"));
  CHECK(rec.at("moe_max_load").get<double>() == 2.0);
  // In aux mode the same call changes nothing.
  const Config aux = tiny_model(moe({"moe.every=2"}));
  std::vector<float> Q(size_t(build_gpt_params(aux).total()), 0.0f);
  update_score_bias(aux, build_gpt_params(aux), Q, step);
  CHECK(std::all_of(Q.begin(), Q.end(), [](float v) { return v == 0.0f; }));
}

TEST_CASE("moe balance: repeated bias updates balance a router that prefers one expert", "[moe]") {
  const Config cfg = tiny_model(moe({"moe.balance=bias", "moe.bias_update_rate=0.002", "moe.n_expert=8", "moe.top_k=1",
                                     "model.n_layer=1", "model.d_model=16"}));
  const ParamTable table = build_gpt_params(cfg);
  std::vector<float> P(size_t(table.total()));
  init_gpt_params(cfg, table, P, 8);
  const ParamInfo& router = table.get("h.0.moe.router.weight");
  const int N = 512, C = 16;
  Rng rng(12);
  std::vector<float> x(size_t(N) * C), y(size_t(N) * C);
  for (float& v : x) v = float(rng.normal());
  for (int c = 0; c < C; ++c) {  // expert 0's logit follows x's mean: it wins about half the tokens
    P[size_t(router.offset) + size_t(c)] = 0.5f;
    for (int e = 1; e < 8; ++e) P[size_t(router.offset) + size_t(e * C + c)] *= 5.0f;
  }
  CpuMoe<float> moe(cfg, table, 0, N);
  std::vector<float> arena(size_t(CpuMoe<float>::activation_elems(cfg, N) + CpuMoe<float>::scratch_elems(cfg, N)));
  moe.bind(arena.data(), arena.data() + CpuMoe<float>::activation_elems(cfg, N));
  auto max_load = [&] {
    moe.forward(P.data(), x.data(), y.data(), N);
    MoeStepStats step;
    step.add({moe.stats()});
    nlohmann::json rec;
    step.write(rec);
    return std::pair{rec.at("moe_max_load").get<double>(), step};
  };
  const double before = max_load().first;
  CAPTURE(before);
  REQUIRE(before > 2.0);
  for (int it = 0; it < 400; ++it) update_score_bias(cfg, table, P, max_load().second);
  const double after = max_load().first;
  CAPTURE(after);
  CHECK(after < 1.25);
}

TEST_CASE("moe training: loss falls on a learnable corpus and metrics carry the expert load", "[moe]") {
  const std::string balance = GENERATE(std::string("aux"), std::string("bias"));
  CAPTURE(balance);
  test::TempDir data("moedata"), run("moerun");
  test::write_markov_shards(data.str(), 32, 20000, 4000, 1);
  const Config cfg = default_config(
      {"model.variant=moe", "moe.n_expert=4", "moe.top_k=2", "moe.d_ff_expert=32", "moe.every=2",
       "moe.n_shared=1", "moe.capacity_factor=1.25", "moe.balance=" + balance, "moe.bias_update_rate=0.01",
       "model.n_layer=2", "model.n_head=2", "model.d_model=16", "model.vocab_size=32", "model.seq_len=16",
       "train.batch_size=4", "train.max_steps=40", "train.eval_every=20", "train.eval_batches=2",
       "train.log_every=1", "train.checkpoint_every=0", "optim.warmup_steps=2", "optim.lr=0.01", "train.threads=1",
       "data.train=" + data / "syn_train_*.bin", "data.val=" + data / "syn_val_*.bin"});
  const RunSummary s = train(cfg, {run / "r", false, {}});
  REQUIRE(s.steps_done == 40);
  const auto recs = io::read_jsonl(run / "r/metrics.jsonl");
  REQUIRE(recs.size() == 40);
  for (const char* key : {"expert_load", "moe_max_load", "moe_dropped_frac", "moe_aux_loss", "moe_z_loss"})
    REQUIRE(recs.back().contains(key));
  REQUIRE(recs.back().at("expert_load").size() == 1);  // one MoE block (every = 2 of 2)
  REQUIRE(recs.back().at("expert_load")[0].size() == 4);
  REQUIRE(recs.front().at("train_loss").get<double>() > std::log(32.0) - 0.3);
  REQUIRE(recs.back().at("val_loss").get<double>() < recs.front().at("train_loss").get<double>() - 1.0);
  if (balance == "bias") {  // the selection bias moved, and the checkpoint carries it
    const auto ckpt = io::find_latest_checkpoint(run / "r");
    REQUIRE(ckpt.has_value());
    const ParamTable table = build_gpt_params(cfg);
    std::vector<float> P(size_t(table.total()), 0.0f);
    load_model_weights(*ckpt, table, P);
    const ParamInfo& b = table.get("h.1.moe.router.score_bias");
    double moved = 0;
    for (int64_t e = 0; e < b.numel; ++e) moved += std::abs(P[size_t(b.offset + e)]);
    CHECK(moved > 0);
  }
}
