// The optimizer interface (src/optim/optimizer.hpp): AdamW's step at the scheduled lr, state
// tensors named by parameter, and a checkpoint round trip into a table of another order.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <set>

#include "common/temp_dir.hpp"
#include "core/rng.hpp"
#include "io/checkpoint_dir.hpp"
#include "io/safetensors.hpp"
#include "optim/adamw.hpp"
#include "optim/lr_schedule.hpp"
#include "optim/optimizer.hpp"
#include "optim/param_split.hpp"
#include "train/checkpoint.hpp"

using namespace pg;

namespace {

struct Spec {
  const char* name;
  std::vector<int64_t> shape;
  Role role;
  bool decay;
};
const std::vector<Spec> kSpecs = {
    {"wte", {32, 16}, Role::embed, true},          {"h.0.ln_1.weight", {16}, Role::norm, false},
    {"h.0.attn.q.weight", {16, 16}, Role::attn, true}, {"h.0.mlp.fc.weight", {48, 16}, Role::mlp, true},
    {"h.0.mlp.fc.bias", {48}, Role::bias, false},  {"h.0.moe.w_in", {2, 16, 48}, Role::expert, true},
};

ParamTable table_in_order(const std::vector<int>& order, const OptimConfig& o) {
  ParamTable t;
  for (int i : order) t.add(kSpecs[size_t(i)].name, kSpecs[size_t(i)].shape, kSpecs[size_t(i)].role, kSpecs[size_t(i)].decay);
  assign_optimizers(t, o);
  return t;
}

// Fills `buf` (laid out by `t`) with values that depend on the parameter's name and element only,
// so two tables of different order get the same values per name.
void fill_by_name(const ParamTable& t, std::vector<float>& buf, uint64_t seed) {
  for (const auto& p : t.entries()) {
    uint64_t h = seed;
    for (char c : p.name) h = h * 131 + uint64_t(c);
    Rng rng(h);
    for (int64_t i = 0; i < p.numel; ++i) buf[size_t(p.offset + i)] = float(0.1 * rng.normal());
  }
}

}  // namespace

TEST_CASE("optimizer: AdamW's first step is lr * lr_factor * sign(g), after decoupled decay", "[optim]") {
  OptimConfig o;
  o.lr = 0.01;
  o.weight_decay = 0.5;
  const ParamTable t = table_in_order({2, 4}, o);  // a decaying matrix and a bias
  AdamW adamw(o, t);
  std::vector<float> w(size_t(t.total()), 0.0f), g(w.size(), 0.0f);
  fill_by_name(t, w, 1);
  fill_by_name(t, g, 2);
  const std::vector<float> w0 = w;
  adamw.step(w, g, 0.5, 1);  // m^ = g, v^ = g^2: the step is lr sign(g) up to eps
  for (const auto& p : t.entries())
    for (int64_t i = p.offset; i < p.offset + p.numel; ++i) {
      const double decay = p.weight_decay ? 1.0 - 0.005 * 0.5 : 1.0;
      const double expect = w0[size_t(i)] * decay - 0.005 * (g[size_t(i)] > 0 ? 1 : -1);
      REQUIRE(w[size_t(i)] == Approx(expect).margin(1e-6));
    }
  CHECK(lr_factor(o, 0, 100) * o.lr == learning_rate(o, 0, 100));
  CHECK(lr_factor(o, 99, 100) == Approx(o.min_lr_ratio));
}

TEST_CASE("optimizer: state round-trips through a checkpoint into a table of another order", "[optim]") {
  const std::string kind = GENERATE(as<std::string>{}, "adamw", "muon");
  CAPTURE(kind);
  OptimConfig o;
  o.kind = kind;
  o.lr = 0.01;
  const ParamTable a = table_in_order({0, 1, 2, 3, 4, 5}, o), b = table_in_order({5, 3, 1, 4, 0, 2}, o);
  std::vector<float> pa(size_t(a.total()), 0.0f), pb(size_t(b.total()), 0.0f), ga = pa, gb = pb;
  fill_by_name(a, pa, 3);
  auto opt_a = make_optimizer(o, a);
  for (int t = 1; t <= 3; ++t) {
    fill_by_name(a, ga, 10 + uint64_t(t));
    opt_a->step(pa, ga, 1.0, t);
  }
  test::TempDir dir("optstate");
  save_checkpoint(dir.str(), 3, a, pa, opt_a->state(), {{"step", 3}, {"config", nullptr}});
  const std::string ckpt = *io::find_latest_checkpoint(dir.str());

  // The file holds the state by name: Muon momentum for Muon tensors, moments for the rest.
  const io::SafetensorsReader r(ckpt + "/optimizer.safetensors");
  const auto names = r.names();
  const std::set<std::string> got(names.begin(), names.end());
  for (const auto& p : a.entries()) {
    CAPTURE(p.name);
    CHECK(got.count(p.name + ".momentum_buffer") == (p.muon ? 1u : 0u));
    CHECK(got.count(p.name + ".exp_avg") == (p.muon ? 0u : 1u));
    CHECK(got.count(p.name + ".exp_avg_sq") == (p.muon ? 0u : 1u));
  }
  CHECK(got.size() == (kind == "muon" ? 3 + 2 * 3 : 2 * 6));  // q, fc, w_in on Muon

  auto opt_b = make_optimizer(o, b);
  load_model_weights(ckpt, b, pb);
  load_optimizer_state(ckpt, opt_b->state());
  for (int t = 4; t <= 5; ++t) {
    fill_by_name(a, ga, 10 + uint64_t(t));
    fill_by_name(b, gb, 10 + uint64_t(t));
    opt_a->step(pa, ga, 1.0, t);
    opt_b->step(pb, gb, 1.0, t);
  }
  for (const auto& p : a.entries()) {
    const auto& q = b.get(p.name);
    CAPTURE(p.name);
    REQUIRE(std::equal(pa.begin() + p.offset, pa.begin() + p.offset + p.numel, pb.begin() + q.offset));
  }
}
