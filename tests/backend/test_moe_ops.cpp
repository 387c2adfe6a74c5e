// The MoE ops (backend/cpu/moe_ops.hpp) in float64: router gates and both router losses,
// dispatch/combine and the grouped expert matmuls against central finite differences, with and
// without dropped tokens; tie-breaking; the values of the aux and z losses.
//
// Finite differences are only valid where the top-k selection does not switch within ±h: the
// router inputs are built with well-separated logits, and each test asserts that the margin
// between the k-th and (k+1)-th score is far above h before trusting the comparison.
#include <catch2/catch.hpp>
#include <cmath>
#include <numeric>

#include "backend/cpu/moe_ops.hpp"
#include "backend/ops_testing.hpp"
#include "common/gradcheck.hpp"

using namespace pg::cpu;
using namespace pg::test;

namespace {
constexpr double kTol = 1e-6;

// Logits whose values per token are a random permutation of {0, s, 2s, ...} plus small noise:
// no two are closer than s/2, so neither probabilities nor selections are near a tie.
Vec separated_logits(pg::Rng& rng, int N, int E, double s = 0.6) {
  Vec z(size_t(N) * E);
  for (int n = 0; n < N; ++n) {
    std::vector<int> perm(static_cast<size_t>(E));
    std::iota(perm.begin(), perm.end(), 0);
    for (int i = E - 1; i > 0; --i) std::swap(perm[size_t(i)], perm[size_t(rng.below(uint64_t(i + 1)))]);
    for (int e = 0; e < E; ++e) z[size_t(n) * E + e] = s * perm[size_t(e)] + 0.1 * s * rng.uniform();
  }
  return z;
}

// min over tokens of (k-th best score − (k+1)-th best score), scores = probs + bias.
double selection_margin(const Vec& probs, const Vec* bias, int N, int E, int k) {
  double margin = 1e9;
  for (int n = 0; n < N; ++n) {
    Vec s(static_cast<size_t>(E));
    for (int e = 0; e < E; ++e) s[size_t(e)] = probs[size_t(n) * E + e] + (bias ? (*bias)[size_t(e)] : 0.0);
    std::sort(s.begin(), s.end(), std::greater<>());
    if (k < E) margin = std::min(margin, s[size_t(k - 1)] - s[size_t(k)]);
  }
  return margin;
}
}  // namespace

TEST_CASE("router: gates, aux and z losses backward match finite differences", "[moe]") {
  const uint64_t seed = GENERATE(11, 12);
  const bool with_bias = GENERATE(false, true);
  CAPTURE(seed, with_bias);
  pg::Rng rng(seed);
  const int N = 6, E = 5, k = 2;
  const double aux_coef = 0.3, z_coef = 0.2;
  Vec logits = separated_logits(rng, N, E);
  const Vec bias = randn(rng, E, 0.05), wg = randn(rng, N * k);
  Vec probs(size_t(N) * E), lse(N), gates(size_t(N) * k);
  std::vector<int32_t> sel(size_t(N) * k), slot(size_t(N) * k), row_token(size_t(N) * k);
  std::vector<int64_t> begin(E + 1), counts(E);
  // L = Σ wg·gates + aux_coef·aux + z_coef·z, the aux's f_e from the selection (constant).
  auto loss = [&] {
    router_fwd(probs.data(), lse.data(), sel.data(), gates.data(), logits.data(), with_bias ? bias.data() : nullptr,
               N, E, k);
    moe_dispatch_plan(slot.data(), row_token.data(), begin.data(), counts.data(), sel.data(), N, E, k, N);
    return dot(gates, wg) + aux_coef * router_aux_loss_fwd(probs.data(), counts.data(), N, E, k) +
           z_coef * router_z_loss_fwd(lse.data(), N);
  };
  loss();
  REQUIRE(selection_margin(probs, with_bias ? &bias : nullptr, N, E, k) > 1e-3);
  AccumGrad dz(rng, N * E);
  router_gates_bwd(dz.data(), wg.data(), gates.data(), sel.data(), N, E, k);
  router_aux_loss_bwd(dz.data(), probs.data(), counts.data(), N, E, k, aux_coef);
  router_z_loss_bwd(dz.data(), probs.data(), lse.data(), N, E, z_coef);
  const Vec g = dz.added();
  check_gradients(gradcheck(loss, {{"logits", logits.data(), N * E, g.data()}}), kTol);
  // Gates are the chosen probabilities renormalised: they sum to 1 and keep their order.
  for (int n = 0; n < N; ++n) {
    CHECK(gates[size_t(n) * k] + gates[size_t(n) * k + 1] == Approx(1.0).epsilon(1e-14));
    if (!with_bias) CHECK(gates[size_t(n) * k] >= gates[size_t(n) * k + 1]);
  }
}

TEST_CASE("router: gradients at exact ties inside the chosen set match finite differences", "[moe]") {
  // Ties among the chosen experts are harmless: a ±h step reorders them but never changes the
  // chosen set, and a loss that weighs each gate by its expert (as the combine does) is continuous.
  // Token 0: experts 1 and 2 tie at the top; token 1: all three chosen experts tie.
  const int N = 2, E = 4, k = 3;
  Vec logits = {-2.0, 0.5, 0.5, 0.1, 0.3, 0.3, -3.0, 0.3};
  pg::Rng rng(31);
  const Vec W = randn(rng, N * E);  // weight of expert e's gate for token n
  Vec probs(size_t(N) * E), lse(N), gates(size_t(N) * k);
  std::vector<int32_t> sel(size_t(N) * k);
  auto loss = [&] {
    router_fwd(probs.data(), lse.data(), sel.data(), gates.data(), logits.data(), nullptr, N, E, k);
    double l = 0.0;
    for (int n = 0; n < N; ++n)
      for (int j = 0; j < k; ++j) l += W[size_t(n) * E + sel[size_t(n) * k + j]] * gates[size_t(n) * k + j];
    return l;
  };
  loss();
  CHECK(sel == std::vector<int32_t>{1, 2, 3, 0, 1, 3});
  CHECK(gates[0] == gates[1]);
  CHECK((gates[3] == gates[4] && gates[4] == gates[5]));
  Vec dgates(size_t(N) * k);
  for (int n = 0; n < N; ++n)
    for (int j = 0; j < k; ++j) dgates[size_t(n) * k + j] = W[size_t(n) * E + sel[size_t(n) * k + j]];
  AccumGrad dz(rng, N * E);
  router_gates_bwd(dz.data(), dgates.data(), gates.data(), sel.data(), N, E, k);
  const Vec g = dz.added();
  check_gradients(gradcheck(loss, {{"logits", logits.data(), N * E, g.data()}}), kTol);
}

TEST_CASE("dispatch, experts and combine backward match finite differences, with dropped tokens", "[moe]") {
  const int64_t capacity = GENERATE(int64_t(100), int64_t(2));  // dropless, then 2 rows per expert
  const bool with_bias = GENERATE(true, false);
  CAPTURE(capacity, with_bias);
  pg::Rng rng(21 + uint64_t(capacity));
  const int N = 7, E = 3, k = 2, C = 4, F = 5;
  // A fixed routing (selection is discrete; its gradient is zero): token n picks 0 first mostly,
  // so expert 0 overflows when capacity = 2.
  std::vector<int32_t> sel = {0, 1, 0, 2, 0, 1, 1, 2, 0, 2, 2, 0, 0, 1};
  Vec x = randn(rng, N * C), gates = rand_away_from_zero(rng, N * k, 0.2, 0.8);
  Vec w1 = randn(rng, E * F * C), b1 = randn(rng, E * F), w2 = randn(rng, E * C * F), b2 = randn(rng, E * C);
  const Vec R = randn(rng, N * C);
  std::vector<int32_t> slot(size_t(N) * k), row_token(size_t(N) * k);
  std::vector<int64_t> begin(E + 1), counts(E);
  const int64_t rows = moe_dispatch_plan(slot.data(), row_token.data(), begin.data(), counts.data(), sel.data(), N,
                                         E, k, std::min<int64_t>(capacity, N));
  Vec xe(size_t(N) * k * C), h(size_t(N) * k * F), a(h.size()), eo(size_t(N) * k * C), y(size_t(N) * C);
  auto loss = [&] {
    moe_gather(xe.data(), x.data(), row_token.data(), rows, C);
    grouped_matmul_fwd(h.data(), xe.data(), w1.data(), with_bias ? b1.data() : nullptr, begin.data(), E, C, F);
    for (int64_t i = 0; i < rows * F; ++i) a[size_t(i)] = std::tanh(h[size_t(i)]);
    grouped_matmul_fwd(eo.data(), a.data(), w2.data(), with_bias ? b2.data() : nullptr, begin.data(), E, F, C);
    moe_combine_fwd(y.data(), eo.data(), gates.data(), slot.data(), N, k, C);
    return dot(y, R);
  };
  loss();
  if (capacity == 2) {
    REQUIRE(rows == 6);  // 14 assignments, 8 dropped: the capacity really binds
    REQUIRE(slot[1 * k + 0] == 1);  // expert 0's second first-choice token is token 1
    REQUIRE(slot[2 * k + 0] == -1);  // the third is dropped
  } else {
    REQUIRE(rows == N * k);
  }
  AccumGrad dx(rng, N * C), dgates(rng, N * k), dw1(rng, E * F * C), db1(rng, E * F), dw2(rng, E * C * F),
      db2(rng, E * C);
  Vec deo(size_t(N) * k * C), dg(size_t(N) * k), da(size_t(rows) * F, 0.0), dh(da.size()), dxe(size_t(rows) * C, 0.0);
  moe_combine_bwd(deo.data(), dg.data(), R.data(), eo.data(), gates.data(), slot.data(), N, k, C);
  for (int i = 0; i < N * k; ++i) dgates.buf[size_t(i)] += dg[size_t(i)];
  grouped_matmul_bwd(da.data(), dw2.data(), with_bias ? db2.data() : nullptr, deo.data(), a.data(), w2.data(),
                     begin.data(), E, F, C);
  for (size_t i = 0; i < dh.size(); ++i) dh[i] = da[i] * (1.0 - a[i] * a[i]);
  grouped_matmul_bwd(dxe.data(), dw1.data(), with_bias ? db1.data() : nullptr, dh.data(), xe.data(), w1.data(),
                     begin.data(), E, C, F);
  moe_scatter_add(dx.data(), dxe.data(), slot.data(), N, k, C);
  const Vec gx = dx.added(), gg = dgates.added(), gw1 = dw1.added(), gb1 = db1.added(), gw2 = dw2.added(),
            gb2 = db2.added();
  std::vector<GradTensor> ts = {{"x", x.data(), N * C, gx.data()},
                                {"gates", gates.data(), N * k, gg.data()},
                                {"w1", w1.data(), E * F * C, gw1.data()},
                                {"w2", w2.data(), E * C * F, gw2.data()}};
  if (with_bias) {
    ts.push_back({"b1", b1.data(), E * F, gb1.data()});
    ts.push_back({"b2", b2.data(), E * C, gb2.data()});
  }
  check_gradients(gradcheck(loss, ts), kTol);
}

TEST_CASE("router: ties go to the lower expert index and the gates split evenly", "[moe]") {
  const int N = 3, E = 4, k = 2;
  // Token 0: all equal. Token 1: experts 1 and 3 tie for first. Token 2: 2 and 3 tie for second.
  const Vec logits = {0, 0, 0, 0, 0, 1, 0, 1, 2, 0, 1, 1};
  Vec probs(size_t(N) * E), lse(N), gates(size_t(N) * k);
  std::vector<int32_t> sel(size_t(N) * k);
  router_fwd(probs.data(), lse.data(), sel.data(), gates.data(), logits.data(), nullptr, N, E, k);
  CHECK(sel == std::vector<int32_t>{0, 1, 1, 3, 0, 2});
  CHECK(gates[0] == gates[1]);
  CHECK(gates[2] == gates[3]);
  // With a selection bias, ties are between biased scores: expert 2's bias lifts it to the top
  // of token 0, and the rest of token 0 still ties and goes to the lowest index.
  const Vec bias = {0, 0, 0.25, 0};
  router_fwd(probs.data(), lse.data(), sel.data(), gates.data(), logits.data(), bias.data(), N, E, k);
  CHECK(sel[0] == 2);
  CHECK(sel[1] == 0);
  CHECK(gates[0] == gates[1]);  // the bias steers selection only: equal probabilities, equal gates
}

TEST_CASE("router losses: aux is 1 for uniform routing and n_expert when collapsed; z is mean lse^2", "[moe]") {
  const int N = 8, E = 4, k = 1;
  std::vector<int32_t> sel(N), slot(N), row_token(N);
  std::vector<int64_t> begin(E + 1), counts(E);
  Vec probs(size_t(N) * E), lse(N), gates(N);
  Vec uniform(size_t(N) * E, 0.0);
  router_fwd(probs.data(), lse.data(), sel.data(), gates.data(), uniform.data(), nullptr, N, E, k);
  // All logits equal: every token picks expert 0 (lowest index), P_e = 1/4, f_0 = 1: aux = 4·1·1/4 = 1.
  moe_dispatch_plan(slot.data(), row_token.data(), begin.data(), counts.data(), sel.data(), N, E, k, N);
  CHECK(router_aux_loss_fwd(probs.data(), counts.data(), N, E, k) == Approx(1.0).epsilon(1e-14));
  CHECK(router_z_loss_fwd(lse.data(), N) == Approx(std::log(4.0) * std::log(4.0)).epsilon(1e-14));
  // Balanced selection counts with uniform probabilities: also 1.
  const std::vector<int64_t> even = {2, 2, 2, 2};
  CHECK(router_aux_loss_fwd(probs.data(), even.data(), N, E, k) == Approx(1.0).epsilon(1e-14));
  // Collapsed: logit 30 on expert 0, so P_0 -> 1 and f_0 = 1: aux -> E.
  Vec collapsed(size_t(N) * E, 0.0);
  for (int n = 0; n < N; ++n) collapsed[size_t(n) * E] = 30.0;
  router_fwd(probs.data(), lse.data(), sel.data(), gates.data(), collapsed.data(), nullptr, N, E, k);
  moe_dispatch_plan(slot.data(), row_token.data(), begin.data(), counts.data(), sel.data(), N, E, k, N);
  CHECK(router_aux_loss_fwd(probs.data(), counts.data(), N, E, k) == Approx(4.0).epsilon(1e-12));
  CHECK(router_z_loss_fwd(lse.data(), N) == Approx(900.0).epsilon(1e-10));
}

TEST_CASE("dispatch plan: rows grouped by expert in priority order, capacity drops the rest", "[moe]") {
  const int N = 4, E = 2, k = 2;
  // Choices (first, second): t0 (0,1), t1 (1,0), t2 (0,1), t3 (0,1). Expert 0: first choices of
  // t0, t2, t3, then the second choice of t1.
  const std::vector<int32_t> sel = {0, 1, 1, 0, 0, 1, 0, 1};
  std::vector<int32_t> slot(8), row_token(8);
  std::vector<int64_t> begin(E + 1), counts(E);
  int64_t rows = moe_dispatch_plan(slot.data(), row_token.data(), begin.data(), counts.data(), sel.data(), N, E, k, 2);
  CHECK(rows == 4);
  CHECK(counts == std::vector<int64_t>{4, 4});
  CHECK(begin == std::vector<int64_t>{0, 2, 4});
  CHECK(std::vector<int32_t>(row_token.begin(), row_token.begin() + 4) == std::vector<int32_t>{0, 2, 1, 0});
  CHECK(slot == std::vector<int32_t>{0, 3, 2, -1, 1, -1, -1, -1});
  rows = moe_dispatch_plan(slot.data(), row_token.data(), begin.data(), counts.data(), sel.data(), N, E, k, 4);
  CHECK(rows == 8);
  CHECK(std::vector<int32_t>(row_token.begin(), row_token.end()) == std::vector<int32_t>{0, 2, 3, 1, 1, 0, 2, 3});
}
