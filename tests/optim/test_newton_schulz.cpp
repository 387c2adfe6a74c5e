// Newton-Schulz schedules and the CPU iteration (src/optim/newton_schulz.hpp), checked against
// the exact composite polynomial and a float64 Jacobi SVD. Bands quoted in the test names were
// measured over the shapes and spectra below and carry a margin of about 2x.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/svd.hpp"
#include "core/error.hpp"
#include "optim/low_precision.hpp"
#include "optim/newton_schulz.hpp"

using namespace pg;
using namespace pg::testing;

namespace {

struct Shape {
  int rows, cols;
};
const Shape kShapes[] = {{16, 16}, {32, 64}, {96, 24}, {64, 64}, {128, 48}};

// Runs NS on a float copy of U diag(s) V^T and returns the output singular values (descending)
// and the composite's prediction for them.
struct NsRun {
  std::vector<double> out, predicted;
};
NsRun run_ns(const Constructed& c, int rows, int cols, const std::vector<double>& s,
             const std::vector<NsCoeffs>& sched, NsPrecision prec) {
  auto Wf = to_float(c.W);
  double nf = 0;
  for (float w : Wf) nf += double(w) * w;
  nf = std::sqrt(nf);
  newton_schulz_cpu(Wf.data(), 1, rows, cols, sched, prec);
  NsRun r;
  r.out = singular_values(Wf.data(), rows, cols);
  for (double x : s) r.predicted.push_back(ns_schedule_eval(sched, x / (nf + 1e-7)));
  std::sort(r.predicted.rbegin(), r.predicted.rend());
  return r;
}

}  // namespace

TEST_CASE("ns: polar express reproduces the ALGORITHMS.md test vector", "[ns]") {
  const auto s = ns_schedule_polar_express(5, 1e-3, 1.02, 0.02);
  const double expect[5][3] = {{8.156554524902461, -22.48329292557795, 15.878769915207462},
                               {4.042929935166731, -2.808917465908708, 0.500017845105130},
                               {3.891667802292664, -2.772484153217687, 0.506064817850340},
                               {3.285753657755656, -2.368129493342540, 0.464490242330032},
                               {2.346541325859637, -1.709782838268706, 0.423235511693052}};
  REQUIRE(s.size() == 5);
  for (int t = 0; t < 5; ++t) {
    CAPTURE(t);
    CHECK(s[t].a == Approx(expect[t][0]).margin(1e-9).epsilon(0));
    CHECK(s[t].b == Approx(expect[t][1]).margin(1e-9).epsilon(0));
    CHECK(s[t].c == Approx(expect[t][2]).margin(1e-9).epsilon(0));
  }
}

TEST_CASE("ns: polar express first step matches the paper's pre-safety triple with its cushion", "[ns]") {
  // The paper's code uses cushion 0.02407327424182761; safety only divides step 1 afterwards.
  const double cushion = 0.02407327424182761;
  const auto raw = ns_schedule_polar_express(5, 1e-3, 1.0, cushion);
  CHECK(raw[0].a == Approx(8.28721201814563).margin(1e-9).epsilon(0));
  CHECK(raw[0].b == Approx(-23.595886519098837).margin(1e-9).epsilon(0));
  CHECK(raw[0].c == Approx(17.300387312530933).margin(1e-9).epsilon(0));
  const double s = 1.01;
  const auto safe = ns_schedule_polar_express(5, 1e-3, s, cushion);
  CHECK(safe[0].a * s == Approx(raw[0].a).epsilon(1e-14));
  CHECK(safe[0].b * s * s * s == Approx(raw[0].b).epsilon(1e-14));
  CHECK(safe[0].c * std::pow(s, 5) == Approx(raw[0].c).epsilon(1e-14));
}

TEST_CASE("ns: remez quintic equioscillates and is the smallest error on its interval", "[ns]") {
  Rng rng(11);
  for (int trial = 0; trial < 20; ++trial) {
    const double u = rng.uniform(0.5, 2.0), l = u * std::pow(10.0, rng.uniform(-3.0, -0.01));
    CAPTURE(trial, l, u);
    double E = 0;
    const NsCoeffs k = ns_remez_quintic(l, u, &E);
    const std::vector<NsCoeffs> one{k};
    CHECK(1.0 - ns_schedule_eval(one, l) == Approx(E).epsilon(1e-9));
    CHECK(ns_schedule_eval(one, u) - 1.0 == Approx(E).epsilon(1e-9));
    // Interior extrema at +E and -E; nothing on the interval exceeds E.
    double lo = 1e9, hi = -1e9;
    for (int i = 0; i <= 20000; ++i) {
      const double e = ns_schedule_eval(one, l + (u - l) * i / 20000.0) - 1.0;
      lo = std::min(lo, e), hi = std::max(hi, e);
    }
    CHECK(hi == Approx(E).epsilon(1e-6));
    CHECK(-lo == Approx(E).epsilon(1e-6));
  }
  // A degenerate interval gives the classic quintic scaled to u.
  const NsCoeffs k = ns_remez_quintic(1.0 - 1e-7, 1.0);
  CHECK(k.a == 15.0 / 8);
  CHECK(k.b == -10.0 / 8);
  CHECK(k.c == 3.0 / 8);
}

TEST_CASE("ns: polar express converges on [ell, 1], later steps are (15/8, -10/8, 3/8)", "[ns]") {
  const auto s12 = ns_schedule_polar_express(12, 1e-3, 1.02, 0.02);
  // Step 7 (index 6) is within 1e-6 of 1: everything after is the classic quintic, undivided.
  for (int t = 7; t < 12; ++t) {
    CAPTURE(t);
    CHECK(s12[t].a == 1.875);
    CHECK(s12[t].b == -1.25);
    CHECK(s12[t].c == 0.375);
  }
  // Exact composite on [1e-3, 1]: 6 steps within 2.3e-3, 7 within 1e-7, 8+ within 1e-13.
  const double tol[] = {2.3e-3, 1e-7, 1e-13, 1e-13, 1e-13};
  for (int steps = 6; steps <= 10; ++steps) {
    const auto s = ns_schedule_polar_express(steps, 1e-3, 1.02, 0.02);
    double dev = 0;
    for (int i = 0; i <= 20000; ++i) dev = std::max(dev, std::fabs(ns_schedule_eval(s, std::pow(10.0, -3.0 + 3.0 * i / 20000)) - 1));
    CAPTURE(steps, dev);
    CHECK(dev <= tol[steps - 6]);
  }
}

TEST_CASE("ns: keller5 composite peaks at 1.2024 and stays in [0.68, 1.2024] for sigma >= 3e-3", "[ns]") {
  const auto k5 = ns_schedule_keller5();
  REQUIRE(k5.size() == 5);
  CHECK(ns_schedule_max_output(k5) == Approx(1.2024).margin(5e-5));
  double lo = 1e9, hi = 0, hi_1e2 = 0;
  for (int i = 0; i <= 200000; ++i) {
    const double x = 3e-3 + (1 - 3e-3) * i / 200000.0, y = ns_schedule_eval(k5, x);
    lo = std::min(lo, y), hi = std::max(hi, y);
    if (x >= 1e-2) hi_1e2 = std::max(hi_1e2, y);
  }
  CHECK(lo >= 0.68);
  CHECK(hi <= 1.2024);
  CHECK(hi_1e2 == Approx(1.134).margin(1e-3));
  CHECK(ns_schedule_eval(k5, 1.5e-3) < 0.68);
  // Polar Express: 5 steps overshoot to 1.1411; converged schedules stay at 1.
  CHECK(ns_schedule_max_output(ns_schedule_polar_express(5)) == Approx(1.141127).margin(1e-5));
  CHECK(ns_schedule_max_output(ns_schedule_polar_express(10)) == Approx(1.0).margin(1e-12));
}

TEST_CASE("ns: schedules and precisions by config name; unknown names are user errors", "[ns]") {
  CHECK(ns_schedule("keller5", 3, 1.0).size() == 3);
  const auto pe = ns_schedule("polar-express", 5, 1.02);
  CHECK(pe[0].a == Approx(8.156554524902461));
  CHECK_THROWS_AS(ns_schedule("cubic", 5, 1.0), UserError);
  CHECK_THROWS_WITH(ns_schedule("cubic", 5, 1.0, "optim.my_key"), Catch::Contains("optim.my_key"));
  CHECK_THROWS_AS(ns_schedule("keller5", 0, 1.0), UserError);
  CHECK_THROWS_AS(ns_schedule("polar-express", 5, 0.9), UserError);
  CHECK(parse_ns_precision("bf16", "k") == NsPrecision::bf16);
  CHECK(parse_ns_precision("fp16", "k") == NsPrecision::fp16);
  CHECK(parse_ns_precision("fp32", "k") == NsPrecision::fp32);
  CHECK_THROWS_WITH(parse_ns_precision("fp8", "optim.ns_precision"), Catch::Contains("optim.ns_precision"));
}

TEST_CASE("ns: bf16 and fp16 rounding is to nearest, ties to even", "[ns]") {
  CHECK(round_to_bf16(1.0f + 0x1p-8f) == 1.0f);                   // tie, 1.0 is even
  CHECK(round_to_bf16(1.0f + 3 * 0x1p-8f) == 1.0f + 0x1p-6f);     // tie, rounds up to even
  CHECK(round_to_bf16(1.0f + 0x1p-8f + 0x1p-20f) == 1.0f + 0x1p-7f);
  CHECK(round_to_bf16(-3.0f) == -3.0f);
  CHECK(round_to_fp16(1.0f + 0x1p-11f) == 1.0f);
  CHECK(round_to_fp16(1.0f + 3 * 0x1p-11f) == 1.0f + 0x1p-9f);
  CHECK(round_to_fp16(65519.0f) == 65504.0f);
  CHECK(std::isinf(round_to_fp16(65520.0f)));
  CHECK(round_to_fp16(0x1p-25f) == 0.0f);                         // tie between 0 and 2^-24
  CHECK(round_to_fp16(3 * 0x1p-25f) == 0x1p-23f);                 // tie, goes to the even 2^-23
  CHECK(round_to_fp16(0x1p-14f - 0x1p-30f) == 0x1p-14f);
  Rng rng(5);
  for (int i = 0; i < 1000; ++i) {
    const float x = float(rng.normal());
    CHECK(std::fabs(round_to_bf16(x) - x) <= std::fabs(x) * 0x1p-8f);
    CHECK(std::fabs(round_to_fp16(x) - x) <= std::max(std::fabs(x) * 0x1p-11f, 0x1p-25f));
  }
}

TEST_CASE("ns: fp32 output singular values are the composite polynomial of the inputs", "[ns]") {
  // Bound measured 1.1e-5 (5-step polar express, whose slope near 0 is ~1e3), 1.3e-6 keller5.
  const uint64_t seed = 21;
  CAPTURE(seed);
  Rng rng(seed);
  for (const char* name : {"keller5", "polar-express"})
    for (Shape sh : kShapes)
      for (double cond : {10.0, 1000.0}) {
        const int k = std::min(sh.rows, sh.cols);
        const auto s = log_spaced(k, 2.0, cond);
        const auto c = with_singular_values(sh.rows, sh.cols, s, rng);
        const auto r = run_ns(c, sh.rows, sh.cols, s, ns_schedule(name, 5, 1.02), NsPrecision::fp32);
        double dev = 0;
        for (int i = 0; i < k; ++i) dev = std::max(dev, std::fabs(r.out[i] - r.predicted[i]));
        CAPTURE(name, sh.rows, sh.cols, cond, dev);
        CHECK(dev <= 3e-5);
      }
}

TEST_CASE("ns: polar express output bands around 1 for sigma / sigma_max >= 1e-3", "[ns]") {
  // Spectra log-spaced over 3 decades, so the smallest normalised input (~4e-4) lies below ell.
  // Measured |sigma_out - 1| over these shapes:
  //   fp32 10 steps 2.5e-7 (band 1e-6); fp32 8 steps [0.99943, 1 + 2.6e-7] (band [0.999, 1 + 1e-6]);
  //   fp16 10 steps 6.0e-4 (band 2e-3); bf16 10 steps 5.0e-3 (band 1e-2).
  struct Case {
    NsPrecision prec;
    int steps;
    double lo, hi;
  };
  const Case cases[] = {{NsPrecision::fp32, 10, 1 - 1e-6, 1 + 1e-6},
                        {NsPrecision::fp32, 8, 0.999, 1 + 1e-6},
                        {NsPrecision::fp16, 10, 1 - 2e-3, 1 + 2e-3},
                        {NsPrecision::bf16, 10, 1 - 1e-2, 1 + 1e-2}};
  const uint64_t seed = 22;
  CAPTURE(seed);
  Rng rng(seed);
  for (const Case& cs : cases)
    for (Shape sh : kShapes)
      for (double cond : {1.0, 10.0, 100.0, 1000.0}) {
        const int k = std::min(sh.rows, sh.cols);
        const auto s = log_spaced(k, 3.0, cond);
        const auto c = with_singular_values(sh.rows, sh.cols, s, rng);
        const auto r = run_ns(c, sh.rows, sh.cols, s, ns_schedule("polar-express", cs.steps, 1.02), cs.prec);
        CAPTURE(int(cs.prec), cs.steps, sh.rows, sh.cols, cond, r.out.front(), r.out.back());
        CHECK(r.out.back() >= cs.lo);
        CHECK(r.out.front() <= cs.hi);
      }
}

TEST_CASE("ns: keller5 stays in its band for normalised sigma >= 3e-3, in fp32, fp16 and bf16", "[ns]") {
  // Exact band [0.6818, 1.2024]. Inputs reach normalised sigma 3.7e-3, close to the peak at 4.1e-3.
  // Measured: fp32 [0.68183, 1.20159], fp16 [0.68149, 1.20168], bf16 [0.67903, 1.20160].
  // Bands checked: fp32 [0.68, 1.2025], fp16 [0.675, 1.21], bf16 [0.66, 1.22].
  const uint64_t seed = 23;
  CAPTURE(seed);
  Rng rng(seed);
  const auto k5 = ns_schedule_keller5();
  struct Band {
    NsPrecision prec;
    double lo, hi;
  };
  for (Band b : {Band{NsPrecision::fp32, 0.68, 1.2025}, Band{NsPrecision::fp16, 0.675, 1.21},
                 Band{NsPrecision::bf16, 0.66, 1.22}})
    for (Shape sh : kShapes)
      for (double cond : {1.0, 10.0, 100.0}) {
        const int k = std::min(sh.rows, sh.cols);
        const auto s = log_spaced(k, 1.0, cond);
        double nf = 0;
        for (double x : s) nf += x * x;
        REQUIRE(s.back() / std::sqrt(nf) >= 3e-3);
        const auto c = with_singular_values(sh.rows, sh.cols, s, rng);
        const auto r = run_ns(c, sh.rows, sh.cols, s, k5, b.prec);
        CAPTURE(int(b.prec), sh.rows, sh.cols, cond, r.out.front(), r.out.back());
        CHECK(r.out.back() >= b.lo);
        CHECK(r.out.front() <= b.hi);
      }
}

TEST_CASE("ns: a batch gives the same bits as one matrix at a time", "[ns]") {
  const uint64_t seed = 24;
  CAPTURE(seed);
  Rng rng(seed);
  for (NsPrecision prec : {NsPrecision::fp32, NsPrecision::bf16, NsPrecision::fp16})
    for (Shape sh : {Shape{24, 40}, Shape{40, 24}}) {
      const int batch = 3;
      const size_t n = size_t(sh.rows) * sh.cols;
      std::vector<float> X(batch * n);
      for (auto& x : X) x = float(rng.normal());
      std::vector<float> one = X;
      const auto sched = ns_schedule("polar-express", 5, 1.02);
      newton_schulz_cpu(X.data(), batch, sh.rows, sh.cols, sched, prec, 1.01);
      for (int b = 0; b < batch; ++b) newton_schulz_cpu(one.data() + b * n, 1, sh.rows, sh.cols, sched, prec, 1.01);
      CAPTURE(int(prec), sh.rows, sh.cols);
      CHECK(X == one);
    }
}

TEST_CASE("ns: a tall matrix gives the transpose of its wide transpose", "[ns]") {
  const uint64_t seed = 25;
  CAPTURE(seed);
  Rng rng(seed);
  const int rows = 72, cols = 20;
  std::vector<float> tall(rows * cols), wide(rows * cols);
  for (auto& x : tall) x = float(rng.normal());
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) wide[j * rows + i] = tall[i * cols + j];
  for (NsPrecision prec : {NsPrecision::fp32, NsPrecision::bf16}) {
    auto t = tall, w = wide;
    const auto sched = ns_schedule_keller5();
    newton_schulz_cpu(t.data(), 1, rows, cols, sched, prec);
    newton_schulz_cpu(w.data(), 1, cols, rows, sched, prec);
    bool same = true;
    for (int i = 0; i < rows; ++i)
      for (int j = 0; j < cols; ++j) same = same && t[i * cols + j] == w[j * rows + i];
    CAPTURE(int(prec));
    CHECK(same);
  }
}

TEST_CASE("ns: float64 polar express converges to U V^T with the input's singular vectors", "[ns]") {
  // 10 steps, condition numbers to 1e3 (smallest normalised input ~4e-4, below ell): measured
  // max |NS(W) - U V^T| 1.6e-14 (1.3e-14 with 12 steps); checked at 1e-10.
  const uint64_t seed = 26;
  CAPTURE(seed);
  Rng rng(seed);
  const auto sched = ns_schedule_polar_express(10, 1e-3, 1.02, 0.02);
  for (Shape sh : kShapes)
    for (double cond : {1.0, 100.0, 1000.0}) {
      const int k = std::min(sh.rows, sh.cols);
      const auto c = with_singular_values(sh.rows, sh.cols, log_spaced(k, 5.0, cond), rng);
      auto X = c.W;
      newton_schulz_cpu(X.data(), 1, sh.rows, sh.cols, sched);
      double err = 0;
      for (int i = 0; i < sh.rows; ++i)
        for (int j = 0; j < sh.cols; ++j) {
          double uv = 0;
          for (int t = 0; t < k; ++t) uv += c.U[i * sh.rows + t] * c.V[j * sh.cols + t];
          err = std::max(err, std::fabs(X[i * sh.cols + j] - uv));
        }
      CAPTURE(sh.rows, sh.cols, cond, err);
      CHECK(err <= 1e-10);
    }
}

TEST_CASE("ns: zero and empty inputs are left finite", "[ns]") {
  std::vector<float> z(12, 0.0f);
  newton_schulz_cpu(z.data(), 1, 3, 4, ns_schedule_keller5(), NsPrecision::bf16);
  for (float x : z) CHECK(x == 0.0f);
  newton_schulz_cpu(static_cast<float*>(nullptr), 0, 3, 4, ns_schedule_keller5(), NsPrecision::fp32);
}
