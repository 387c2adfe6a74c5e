// Every CPU op's backward against central differences of its forward, in float64.
// The loss is Σ out ⊙ R with R random normal (so every output element carries a different
// upstream gradient); inputs are random and never zero. Gradient buffers start as random noise
// and the test compares what the backward ADDED, which also checks the += rule.
#include <catch2/catch.hpp>
#include <cmath>

#include "backend/cpu/ops.hpp"
#include "backend/ops_testing.hpp"
#include "common/gradcheck.hpp"

using namespace pg::cpu;
using namespace pg::test;

namespace {
constexpr double kTol = 1e-6;
}

TEST_CASE("matmul backward matches finite differences (with and without bias)", "[ops]") {
  const uint64_t seed = GENERATE(1, 2);
  CAPTURE(seed);
  pg::Rng rng(seed);
  const int N = 4, IC = 5, OC = 3;
  for (const bool with_bias : {true, false}) {
    CAPTURE(with_bias);
    Vec x = randn(rng, N * IC), w = randn(rng, OC * IC), b = randn(rng, OC);
    const Vec R = randn(rng, N * OC);
    Vec out(N * OC);
    const auto loss = [&] {
      matmul_fwd(out.data(), x.data(), w.data(), with_bias ? b.data() : nullptr, N, IC, OC);
      return dot(out, R);
    };
    AccumGrad dx(rng, N * IC), dw(rng, OC * IC), db(rng, OC);
    matmul_bwd(dx.data(), dw.data(), with_bias ? db.data() : nullptr, R.data(), x.data(), w.data(),
               N, IC, OC);
    const Vec gx = dx.added(), gw = dw.added();
    std::vector<GradTensor> ts = {{"inp", x.data(), N * IC, gx.data()},
                                  {"w", w.data(), OC * IC, gw.data()}};
    const Vec gb = db.added();
    if (with_bias)
      ts.push_back({"bias", b.data(), OC, gb.data()});
    else
      CHECK(gb == Vec(OC, 0.0));  // a null dbias leaves the buffer alone
    check_gradients(gradcheck(loss, ts), kTol);
  }
}

TEST_CASE("matmul backward computes each gradient alone when the others are null", "[ops]") {
  const uint64_t seed = 3;
  CAPTURE(seed);
  pg::Rng rng(seed);
  const int N = 6, IC = 4, OC = 5;
  const Vec x = randn(rng, N * IC), w = randn(rng, OC * IC), R = randn(rng, N * OC);
  Vec dx(N * IC, 0.0), dw(OC * IC, 0.0), db(OC, 0.0);
  matmul_bwd(dx.data(), dw.data(), db.data(), R.data(), x.data(), w.data(), N, IC, OC);
  Vec dx1(N * IC, 0.0), dw1(OC * IC, 0.0), db1(OC, 0.0);
  matmul_bwd(dx1.data(), nullptr, nullptr, R.data(), x.data(), w.data(), N, IC, OC);
  matmul_bwd(nullptr, dw1.data(), nullptr, R.data(), x.data(), w.data(), N, IC, OC);
  matmul_bwd(nullptr, nullptr, db1.data(), R.data(), x.data(), w.data(), N, IC, OC);
  CHECK(dx1 == dx);
  CHECK(dw1 == dw);
  CHECK(db1 == db);
}

TEST_CASE("embedding backward matches finite differences (repeated tokens, wpe optional)",
          "[ops]") {
  const uint64_t seed = 4;
  CAPTURE(seed);
  pg::Rng rng(seed);
  const int B = 2, Tn = 3, C = 4, V = 3;  // 6 tokens over 3 ids: ids repeat
  const auto tokens = rand_ints(rng, B * Tn, V);
  for (const bool with_wpe : {true, false}) {
    CAPTURE(with_wpe);
    Vec wte = randn(rng, V * C), wpe = randn(rng, Tn * C);
    const Vec R = randn(rng, B * Tn * C);
    Vec out(B * Tn * C);
    const auto loss = [&] {
      embedding_fwd(out.data(), tokens.data(), wte.data(), with_wpe ? wpe.data() : nullptr, B, Tn,
                    C);
      return dot(out, R);
    };
    AccumGrad dwte(rng, V * C), dwpe(rng, Tn * C);
    embedding_bwd(dwte.data(), with_wpe ? dwpe.data() : nullptr, R.data(), tokens.data(), B, Tn, C);
    const Vec g_wte = dwte.added(), g_wpe = dwpe.added();
    std::vector<GradTensor> ts = {{"wte", wte.data(), V * C, g_wte.data()}};
    if (with_wpe) ts.push_back({"wpe", wpe.data(), Tn * C, g_wpe.data()});
    check_gradients(gradcheck(loss, ts), kTol);
  }
}

TEST_CASE("layernorm backward matches finite differences (with and without bias)", "[ops]") {
  const uint64_t seed = 5;
  CAPTURE(seed);
  pg::Rng rng(seed);
  const int N = 3, C = 7;
  for (const bool with_bias : {true, false}) {
    CAPTURE(with_bias);
    Vec x = randn(rng, N * C), g = rand_away_from_zero(rng, C), b = randn(rng, C);
    const Vec R = randn(rng, N * C);
    Vec out(N * C), mean(N), rstd(N);
    const auto loss = [&] {
      layernorm_fwd(out.data(), mean.data(), rstd.data(), x.data(), g.data(),
                    with_bias ? b.data() : nullptr, N, C);
      return dot(out, R);
    };
    loss();
    AccumGrad dx(rng, N * C), dg(rng, C), db(rng, C);
    layernorm_bwd(dx.data(), dg.data(), with_bias ? db.data() : nullptr, R.data(), x.data(),
                  g.data(), mean.data(), rstd.data(), N, C);
    const Vec gx = dx.added(), gg = dg.added(), gb = db.added();
    std::vector<GradTensor> ts = {{"inp", x.data(), N * C, gx.data()},
                                  {"gain", g.data(), C, gg.data()}};
    if (with_bias) ts.push_back({"bias", b.data(), C, gb.data()});
    check_gradients(gradcheck(loss, ts), kTol);
  }
}

TEST_CASE("rmsnorm backward matches finite differences (with and without gain)", "[ops]") {
  const uint64_t seed = 6;
  CAPTURE(seed);
  pg::Rng rng(seed);
  const int N = 4, C = 6;
  for (const bool with_gain : {true, false}) {
    CAPTURE(with_gain);
    Vec x = randn(rng, N * C), g = rand_away_from_zero(rng, C);
    const Vec R = randn(rng, N * C);
    Vec out(N * C), rstd(N);
    const auto loss = [&] {
      rmsnorm_fwd(out.data(), rstd.data(), x.data(), with_gain ? g.data() : nullptr, N, C);
      return dot(out, R);
    };
    loss();
    AccumGrad dx(rng, N * C), dg(rng, C);
    rmsnorm_bwd(dx.data(), with_gain ? dg.data() : nullptr, R.data(), x.data(),
                with_gain ? g.data() : nullptr, rstd.data(), N, C);
    const Vec gx = dx.added(), gg = dg.added();
    std::vector<GradTensor> ts = {{"inp", x.data(), N * C, gx.data()}};
    if (with_gain) ts.push_back({"gain", g.data(), C, gg.data()});
    check_gradients(gradcheck(loss, ts), kTol);
  }
}

TEST_CASE("gelu and relu2 backward match finite differences", "[ops]") {
  const uint64_t seed = 7;
  CAPTURE(seed);
  pg::Rng rng(seed);
  const int n = 40;
  Vec x = rand_away_from_zero(rng, n, 0.05, 3.0);
  const Vec R = randn(rng, n);
  Vec out(n);
  SECTION("gelu") {
    const auto loss = [&] {
      gelu_fwd(out.data(), x.data(), n);
      return dot(out, R);
    };
    AccumGrad dx(rng, n);
    gelu_bwd(dx.data(), R.data(), x.data(), n);
    const Vec gx = dx.added();
    check_gradients(gradcheck(loss, {{"inp", x.data(), n, gx.data()}}), kTol);
  }
  SECTION("relu2") {
    const auto loss = [&] {
      relu2_fwd(out.data(), x.data(), n);
      return dot(out, R);
    };
    AccumGrad dx(rng, n);
    relu2_bwd(dx.data(), R.data(), x.data(), n);
    const Vec gx = dx.added();
    check_gradients(gradcheck(loss, {{"inp", x.data(), n, gx.data()}}), kTol);
  }
}

TEST_CASE("softcap backward matches finite differences, also in place", "[ops]") {
  const uint64_t seed = 8;
  CAPTURE(seed);
  pg::Rng rng(seed);
  const int n = 30;
  const double cap = 2.5;
  Vec x = randn(rng, n, 3.0);
  const Vec R = randn(rng, n);
  Vec out(n);
  const auto loss = [&] {
    softcap_fwd(out.data(), x.data(), n, cap);
    return dot(out, R);
  };
  loss();
  Vec gx(n, 123.0);  // softcap_bwd writes: the old contents must not matter
  softcap_bwd(gx.data(), R.data(), out.data(), n, cap);
  Vec inplace = R;
  softcap_bwd(inplace.data(), inplace.data(), out.data(), n, cap);
  CHECK(inplace == gx);
  check_gradients(gradcheck(loss, {{"inp", x.data(), n, gx.data()}}), kTol);
}

TEST_CASE("rope backward (the inverse rotation) matches finite differences", "[ops]") {
  const uint64_t seed = 9;
  CAPTURE(seed);
  pg::Rng rng(seed);
  const int B = 2, Tn = 5, NH = 2, hs = 6;
  const int64_t n = int64_t(B) * Tn * NH * hs;
  const double theta = 100.0;  // small base: the high pairs rotate visibly too
  Vec x = randn(rng, n);
  const Vec R = randn(rng, n);
  Vec y(n);
  const auto loss = [&] {
    y = x;
    rope_fwd(y.data(), B, Tn, NH, hs, theta);
    return dot(y, R);
  };
  Vec gx = R;
  rope_bwd(gx.data(), B, Tn, NH, hs, theta);
  check_gradients(gradcheck(loss, {{"x", x.data(), n, gx.data()}}), kTol);
}

TEST_CASE("attention backward matches finite differences (B=2, T=5, NH=2, hs=4)", "[ops]") {
  const uint64_t seed = 10;
  CAPTURE(seed);
  pg::Rng rng(seed);
  const int B = 2, Tn = 5, NH = 2, hs = 4;
  const int64_t n = int64_t(B) * Tn * NH * hs;
  const double scale = 1.0 / std::sqrt(double(hs));
  Vec q = randn(rng, n), k = randn(rng, n), v = randn(rng, n);
  const Vec R = randn(rng, n);
  Vec out(n), probs(size_t(B) * NH * Tn * Tn);
  const auto loss = [&] {
    attention_fwd(out.data(), probs.data(), q.data(), k.data(), v.data(), B, Tn, NH, hs, scale);
    return dot(out, R);
  };
  loss();
  AccumGrad dq(rng, n), dk(rng, n), dv(rng, n);
  attention_bwd(dq.data(), dk.data(), dv.data(), R.data(), probs.data(), q.data(), k.data(),
                v.data(), B, Tn, NH, hs, scale);
  const Vec gq = dq.added(), gk = dk.added(), gv = dv.added();
  check_gradients(gradcheck(loss, {{"q", q.data(), n, gq.data()},
                                   {"k", k.data(), n, gk.data()},
                                   {"v", v.data(), n, gv.data()}}),
                  kTol);
}

TEST_CASE("cross-entropy backward matches finite differences, also in place", "[ops]") {
  const uint64_t seed = 11;
  CAPTURE(seed);
  pg::Rng rng(seed);
  const int N = 6, V = 7;
  const auto targets = rand_ints(rng, N, V);
  Vec logits = randn(rng, N * V, 2.0);
  Vec losses(N);
  const auto loss = [&] {
    return cross_entropy_fwd(losses.data(), nullptr, logits.data(), targets.data(), N, V);
  };
  Vec g(N * V, -5.0);  // cross_entropy_bwd writes: the old contents must not matter
  cross_entropy_bwd(g.data(), logits.data(), targets.data(), N, V, 1.0 / N);
  Vec inplace = logits;
  cross_entropy_bwd(inplace.data(), inplace.data(), targets.data(), N, V, 1.0 / N);
  CHECK(inplace == g);
  check_gradients(gradcheck(loss, {{"logits", logits.data(), N * V, g.data()}}), kTol);
}

TEST_CASE("cross-entropy backward from the forward's logsumexps matches finite differences, also in place", "[ops]") {
  const uint64_t seed = 21;
  CAPTURE(seed);
  pg::Rng rng(seed);
  const int N = 6, V = 11;
  const auto targets = rand_ints(rng, N, V);
  Vec logits = randn(rng, N * V, 2.0);
  Vec losses(N), lse(N, 7.0);
  const auto loss = [&] {
    return cross_entropy_fwd(losses.data(), nullptr, logits.data(), targets.data(), N, V);
  };
  cross_entropy_fwd(losses.data(), nullptr, logits.data(), targets.data(), N, V, lse.data());
  for (int r = 0; r < N; ++r) {  // lse - logit of the target is the row's loss
    CHECK(lse[size_t(r)] - logits[size_t(r * V + targets[size_t(r)])] == Approx(losses[size_t(r)]).epsilon(1e-12));
  }
  Vec g(N * V, -5.0);  // it writes: the old contents must not matter
  cross_entropy_bwd_lse(g.data(), logits.data(), lse.data(), targets.data(), N, V, 0.5 / N);
  Vec inplace = logits;
  cross_entropy_bwd_lse(inplace.data(), inplace.data(), lse.data(), targets.data(), N, V, 0.5 / N);
  CHECK(inplace == g);
  Vec ref(N * V);
  cross_entropy_bwd(ref.data(), logits.data(), targets.data(), N, V, 0.5 / N);
  for (size_t i = 0; i < g.size(); ++i) CHECK(g[i] == Approx(ref[i]).margin(1e-15).epsilon(1e-12));
  for (double& x : g) x *= 2.0;  // the gradient of the mean loss is dloss = 1/N
  check_gradients(gradcheck(loss, {{"logits", logits.data(), N * V, g.data()}}), kTol);
}

TEST_CASE("softcap composed with cross-entropy: gradient matches finite differences", "[ops]") {
  const uint64_t seed = 12;
  CAPTURE(seed);
  pg::Rng rng(seed);
  const int N = 5, V = 9;
  const double cap = 3.0;
  const auto targets = rand_ints(rng, N, V);
  Vec z = randn(rng, N * V, 3.0);
  Vec capped(N * V), losses(N);
  const auto loss = [&] {
    softcap_fwd(capped.data(), z.data(), N * V, cap);
    return cross_entropy_fwd(losses.data(), nullptr, capped.data(), targets.data(), N, V);
  };
  loss();
  Vec g(N * V);
  cross_entropy_bwd(g.data(), capped.data(), targets.data(), N, V, 1.0 / N);
  softcap_bwd(g.data(), g.data(), capped.data(), N * V, cap);  // in place, as the model runs it
  check_gradients(gradcheck(loss, {{"z", z.data(), N * V, g.data()}}), kTol);
}
