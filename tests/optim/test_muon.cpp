// Muon (src/optim/muon.hpp) and grouped Newton-Schulz (src/optim/ns_groups.hpp): grouping does
// not change a bit, the momentum/update math matches a float64 reference, the update scales, the
// decay is decoupled, steps descend a least-squares objective, bad settings are refused.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "backend/cpu/parallel.hpp"
#include "core/error.hpp"
#include "core/rng.hpp"
#include "optim/muon.hpp"
#include "optim/newton_schulz.hpp"
#include "optim/ns_groups.hpp"

using namespace pg;

namespace {

std::vector<float> gaussian(Rng& rng, size_t n, double std = 1.0) {
  std::vector<float> v(n);
  for (float& x : v) x = float(std * rng.normal());
  return v;
}

// A table of Muon matrices only: a wide, a tall and a square attention/MLP matrix and a 3-D
// expert tensor whose experts share the tall matrix's oriented shape.
ParamTable muon_table() {
  ParamTable t;
  t.add("h.0.attn.q.weight", {16, 16}, Role::attn, true);
  t.add("h.0.mlp.fc.weight", {48, 16}, Role::mlp, true);
  t.add("h.0.mlp.proj.weight", {16, 48}, Role::mlp, true);
  t.add("h.0.moe.w_in", {3, 16, 48}, Role::expert, true);
  for (auto& p : t.entries()) p.muon = true;
  return t;
}

OptimConfig muon_cfg(std::vector<std::string> sets = {}) {
  OptimConfig c;
  c.kind = "muon";
  c.muon_lr = 0.02;
  c.weight_decay = 0.1;
  for (const auto& s : sets) {
    const auto eq = s.find('=');
    const std::string k = s.substr(0, eq), v = s.substr(eq + 1);
    if (k == "ns_precision") c.ns_precision = v;
    else if (k == "ns_schedule") c.ns_schedule = v;
    else if (k == "ns_steps") c.ns_steps = std::stoi(v);
    else if (k == "muon_scale") c.muon_scale = v;
    else if (k == "muon_nesterov") c.muon_nesterov = v == "true";
    else if (k == "weight_decay") c.weight_decay = std::stod(v);
    else FAIL("unknown test setting " << k);
  }
  return c;
}

}  // namespace

TEST_CASE("muon: grouped Newton-Schulz equals one matrix at a time, bit for bit", "[optim]") {
  const uint64_t seed = GENERATE(1u, 2u);
  CAPTURE(seed);
  Rng rng(seed);
  const std::vector<MatrixShape> shapes = {{32, 64}, {64, 32}, {16, 16}, {32, 64}, {48, 16}, {16, 48}, {16, 16}};
  NsGroups groups(shapes);
  REQUIRE(groups.groups().size() == 3);  // 32x64 (x3, one transposed), 16x16 (x2), 16x48 (x2)
  CHECK(groups.groups()[0].members == std::vector<int>{0, 1, 3});
  CHECK(groups.groups()[1].members == std::vector<int>{2, 6});
  CHECK(groups.groups()[2].members == std::vector<int>{4, 5});

  const auto sched = ns_schedule("polar-express", 5, 1.01);
  for (NsPrecision prec : {NsPrecision::bf16, NsPrecision::fp32}) {
    std::vector<std::vector<float>> grouped, single;
    std::vector<float*> ptrs;
    for (const auto& s : shapes) grouped.push_back(gaussian(rng, size_t(s.rows) * s.cols));
    single = grouped;
    for (auto& g : grouped) ptrs.push_back(g.data());
    groups.run(ptrs, sched, prec, 1.01);
    for (size_t i = 0; i < shapes.size(); ++i) {
      newton_schulz_cpu(single[i].data(), 1, shapes[i].rows, shapes[i].cols, sched, prec, 1.01);
      CAPTURE(i);
      REQUIRE(grouped[i] == single[i]);
    }
  }
}

TEST_CASE("muon: expert matrices join the group of their oriented shape", "[optim]") {
  const ParamTable t = muon_table();
  const Muon muon(muon_cfg(), t);
  const auto& g = muon.ns_groups().groups();
  REQUIRE(g.size() == 2);
  CHECK((g[0].m == 16 && g[0].n == 16 && g[0].members.size() == 1));
  CHECK((g[1].m == 16 && g[1].n == 48 && g[1].members.size() == 5));  // fc (tall), proj, 3 experts
  const auto d = muon.describe();
  REQUIRE(d.size() == 1);
  CHECK_THAT(d[0], Catch::Contains("4 tensors, 6 matrices") && Catch::Contains("1 x 16x16, 5 x 16x48"));
}

// float64 reference of the whole Muon step, straight from the formulas in muon.hpp.
TEST_CASE("muon: momentum, Nesterov direction, decay and update match a float64 reference", "[optim]") {
  const bool nesterov = GENERATE(true, false);
  const std::string rule = GENERATE(as<std::string>{}, "keller", "moonlight");
  CAPTURE(nesterov, rule);
  const ParamTable t = muon_table();
  OptimConfig cfg = muon_cfg({"ns_precision=fp32", std::string("muon_nesterov=") + (nesterov ? "true" : "false"),
                              "muon_scale=" + rule});
  Muon muon(cfg, t);
  const uint64_t seed = 7;
  CAPTURE(seed);
  Rng rng(seed);
  std::vector<float> w = gaussian(rng, size_t(t.total()), 0.05);
  std::vector<double> w64(w.begin(), w.end()), b64(w.size(), 0.0);
  const auto sched = ns_schedule(cfg.ns_schedule, cfg.ns_steps, 1.01);
  const double mu = cfg.muon_momentum;
  for (int step = 1; step <= 4; ++step) {
    const std::vector<float> g = gaussian(rng, w.size());
    const double lr_factor = 1.0 - 0.2 * step;
    muon.step(w, g, lr_factor, step);
    const double lr = cfg.muon_lr * lr_factor;
    for (const auto& p : t.entries()) {
      const int64_t rows = p.rows(), cols = p.cols(), per = rows * cols;
      for (int64_t e = 0; e < p.numel / per; ++e) {
        const size_t o = size_t(p.offset + e * per);
        std::vector<double> d(static_cast<size_t>(per));
        for (size_t i = 0; i < size_t(per); ++i) {
          b64[o + i] = mu * b64[o + i] + (1 - mu) * g[o + i];
          d[i] = nesterov ? (1 - mu) * g[o + i] + mu * b64[o + i] : b64[o + i];
        }
        newton_schulz_cpu(d.data(), 1, int(rows), int(cols), sched, 1.01);
        const double scale = rule == "keller" ? std::sqrt(std::max(1.0, double(rows) / cols))
                                              : 0.2 * std::sqrt(double(std::max(rows, cols)));
        for (size_t i = 0; i < size_t(per); ++i)
          w64[o + i] = w64[o + i] * (1 - lr * cfg.weight_decay) - lr * scale * d[i];
      }
    }
    double max_err = 0;
    for (const auto& p : t.entries())
      for (int64_t i = p.offset; i < p.offset + p.numel; ++i) max_err = std::max(max_err, std::abs(w[size_t(i)] - w64[size_t(i)]));
    CAPTURE(step, max_err);
    REQUIRE(max_err < 2e-6);  // updates are ~lr * scale / sqrt(48) ~ 5e-3; fp32 NS agrees to ~1e-5 of that
  }
  const auto st = muon.state();
  REQUIRE(st.size() == 4);
  CHECK(st[3].name == "h.0.moe.w_in.momentum_buffer");
  for (const auto& s : st)
    for (int64_t i = 0; i < s.numel; ++i) {
      const size_t o = size_t(t.get(s.name.substr(0, s.name.size() - 16)).offset + i);
      REQUIRE(s.data[i] == Approx(b64[o]).margin(1e-6));
    }
}

TEST_CASE("muon: keller and moonlight update scales", "[optim]") {
  CHECK(muon_update_scale("keller", 512, 128) == Approx(2.0));
  CHECK(muon_update_scale("keller", 128, 512) == 1.0);
  CHECK(muon_update_scale("keller", 128, 128) == 1.0);
  CHECK(muon_update_scale("moonlight", 512, 128) == Approx(0.2 * std::sqrt(512.0)));
  CHECK(muon_update_scale("moonlight", 128, 512) == Approx(0.2 * std::sqrt(512.0)));
  REQUIRE_THROWS_AS(muon_update_scale("adam", 2, 2), UserError);

  // moonlight: with a converged orthogonalisation every matrix's update has RMS 0.2 * lr, like
  // AdamW's, whatever its shape (O = U V^T of a full-rank m x n, m <= n, has RMS 1/sqrt(n)).
  const ParamTable t = muon_table();
  Muon muon(muon_cfg({"muon_scale=moonlight", "ns_precision=fp32", "ns_steps=8", "weight_decay=0"}), t);
  Rng rng(3);
  std::vector<float> w(size_t(t.total()), 0.0f);
  const std::vector<float> g = gaussian(rng, w.size());
  muon.step(w, g, 1.0, 1);
  for (const auto& p : t.entries()) {
    double ss = 0;
    for (int64_t i = p.offset; i < p.offset + p.numel; ++i) ss += double(w[size_t(i)]) * w[size_t(i)];
    CAPTURE(p.name);
    CHECK(std::sqrt(ss / double(p.numel)) == Approx(0.2 * 0.02).epsilon(1e-3));
  }
}

TEST_CASE("muon: weight decay is decoupled from the gradient and the momentum", "[optim]") {
  const ParamTable t = muon_table();
  const uint64_t seed = 11;
  CAPTURE(seed);
  Rng rng(seed);
  const std::vector<float> w0 = gaussian(rng, size_t(t.total()), 0.05);
  const std::vector<float> g = gaussian(rng, w0.size());
  Muon plain(muon_cfg({"weight_decay=0"}), t), decayed(muon_cfg({"weight_decay=0.5"}), t);
  std::vector<float> a = w0, b = w0;
  plain.step(a, g, 1.0, 1);
  decayed.step(b, g, 1.0, 1);
  // a = w0 - u and b = w0 c - u with the same u = lr scale NS(D): b - a = -(1 - c) w0.
  const double c = 1.0 - 0.02 * 0.5;
  for (const auto& p : t.entries())
    for (int64_t i = p.offset; i < p.offset + p.numel; ++i) {
      const double gap = (double(b[size_t(i)]) - a[size_t(i)]) + (1.0 - c) * w0[size_t(i)];
      REQUIRE(std::abs(gap) < 1e-7);  // float rounding of |w| <= ~0.3; the decay term is ~1e-2 |w|
    }
  // The decay never enters the momentum.
  plain.step(a, g, 1.0, 2);
  decayed.step(b, g, 1.0, 2);
  const auto sa = plain.state(), sb = decayed.state();
  for (size_t k = 0; k < sa.size(); ++k)
    for (int64_t i = 0; i < sa[k].numel; ++i) REQUIRE(sa[k].data[i] == sb[k].data[i]);
  // A zero gradient (from a zero momentum) only shrinks W, by exactly c.
  std::vector<float> z(w0.size(), 0.0f), w = w0;
  Muon fresh(muon_cfg({"weight_decay=0.5"}), t);
  fresh.step(w, z, 1.0, 1);
  for (const auto& p : t.entries())
    for (int64_t i = p.offset; i < p.offset + p.numel; ++i) REQUIRE(w[size_t(i)] == w0[size_t(i)] * float(c));
}

TEST_CASE("muon: steps decrease a least-squares objective", "[optim]") {
  // f(W) = 1/2 ||W X - Y||^2 / N with Y = W* X: W 16 x 48, X 48 x 256.
  const ParamTable t = [] {
    ParamTable x;
    x.add("h.0.mlp.proj.weight", {16, 48}, Role::mlp, true);
    x.entries()[0].muon = true;
    return x;
  }();
  const uint64_t seed = 5;
  CAPTURE(seed);
  Rng rng(seed);
  const int m = 16, k = 48, N = 256;
  const std::vector<float> X = gaussian(rng, size_t(k) * N), Wstar = gaussian(rng, size_t(m) * k, 0.05);
  auto loss_and_grad = [&](const std::vector<float>& W, std::vector<float>& G) {
    std::fill(G.begin(), G.end(), 0.0f);
    double f = 0;
    for (int n = 0; n < N; ++n)
      for (int i = 0; i < m; ++i) {
        double r = 0;
        for (int j = 0; j < k; ++j) r += double(W[size_t(i) * k + j] - Wstar[size_t(i) * k + j]) * X[size_t(j) * N + n];
        f += 0.5 * r * r / N;
        for (int j = 0; j < k; ++j) G[size_t(i) * k + j] += float(r * X[size_t(j) * N + n] / N);
      }
    return f;
  };
  Muon muon(muon_cfg({"weight_decay=0"}), t);
  std::vector<float> W(size_t(t.total()), 0.0f), G(W.size());
  const double f0 = loss_and_grad(W, G);
  double f = f0;
  const int steps = 150;
  for (int s = 0; s < steps; ++s) {
    muon.step(W, G, 1.0 - double(s) / steps, s + 1);
    f = loss_and_grad(W, G);
  }
  CAPTURE(f0, f);
  REQUIRE(f < 0.01 * f0);
}

TEST_CASE("muon: bad settings are refused with one line naming the key", "[optim]") {
  const ParamTable t = muon_table();
  auto message = [&](OptimConfig c) {
    try {
      Muon m(c, t);
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  OptimConfig c = muon_cfg();
  c.ns_schedule = "cubic";
  CHECK_THAT(message(c), Catch::Contains("optim.ns_schedule"));
  c = muon_cfg();
  c.ns_precision = "int8";
  CHECK_THAT(message(c), Catch::Contains("optim.ns_precision"));
  c = muon_cfg();
  c.muon_momentum = -0.1;
  CHECK_THAT(message(c), Catch::Contains("optim.muon_momentum"));
  c = muon_cfg();
  c.muon_scale = "adam";
  CHECK_THAT(message(c), Catch::Contains("optim.muon_scale"));
  c = muon_cfg();
  c.ns_steps = 0;
  CHECK_THAT(message(c), Catch::Contains("optim.ns_schedule") || Catch::Contains("steps"));
  for (const std::string msg : {message(c)}) CHECK(msg.find('\n') == std::string::npos);
}
