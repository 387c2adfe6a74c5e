// Forward correctness of the CPU ops: against naive formulas written out here, against the
// properties the math promises (normalised rows, norm-preserving rotations), and fp32 against
// float64 on the same inputs.
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>

#include "backend/cpu/ops.hpp"
#include "backend/ops_testing.hpp"

using namespace pg::cpu;
using namespace pg::test;

namespace {

// out[n,o] = Σ_i inp[n,i]·w[o,i] + bias[o], in double.
Vec naive_matmul(const Vec& x, const Vec& w, const double* bias, int N, int IC, int OC) {
  Vec out(size_t(N) * OC);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o) {
      double s = bias ? bias[o] : 0.0;
      for (int i = 0; i < IC; ++i) s += x[size_t(n) * IC + i] * w[size_t(o) * IC + i];
      out[size_t(n) * OC + o] = s;
    }
  return out;
}

// Attention from its definition: full score matrix, -inf above the diagonal, softmax, P·V.
void naive_attention(Vec& out, Vec& probs, const Vec& q, const Vec& k, const Vec& v, int B, int Tn,
                     int NH, int hs, double scale) {
  const int C = NH * hs;
  out.assign(size_t(B) * Tn * C, 0.0);
  probs.assign(size_t(B) * NH * Tn * Tn, 0.0);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int t = 0; t < Tn; ++t) {
        std::vector<double> a(Tn);
        for (int s = 0; s < Tn; ++s) {
          if (s > t) {
            a[s] = -std::numeric_limits<double>::infinity();
            continue;
          }
          double d = 0.0;
          for (int i = 0; i < hs; ++i)
            d +=
                q[(size_t(b) * Tn + t) * C + h * hs + i] * k[(size_t(b) * Tn + s) * C + h * hs + i];
          a[s] = scale * d;
        }
        double z = 0.0;
        for (int s = 0; s < Tn; ++s) z += std::exp(a[s]);
        for (int s = 0; s < Tn; ++s) {
          const double p = std::exp(a[s]) / z;
          probs[((size_t(b) * NH + h) * Tn + t) * Tn + s] = p;
          for (int i = 0; i < hs; ++i)
            out[(size_t(b) * Tn + t) * C + h * hs + i] +=
                p * v[(size_t(b) * Tn + s) * C + h * hs + i];
        }
      }
}

}  // namespace

TEST_CASE("matmul forward and backward equal a naive triple loop (fp32 and float64)", "[ops]") {
  const uint64_t seed = 21;
  CAPTURE(seed);
  pg::Rng rng(seed);
  const int N = 37, IC = 19, OC = 23;
  const Vec x = randn(rng, N * IC), w = randn(rng, OC * IC), b = randn(rng, OC);
  const Vec dout = randn(rng, N * OC);
  for (const bool with_bias : {true, false}) {
    CAPTURE(with_bias);
    const Vec ref = naive_matmul(x, w, with_bias ? b.data() : nullptr, N, IC, OC);
    Vec out(N * OC, std::nan(""));  // the output's old contents must not leak in
    matmul_fwd(out.data(), x.data(), w.data(), with_bias ? b.data() : nullptr, N, IC, OC);
    CHECK(max_abs_diff(out, ref) < 1e-12);

    auto xf = cast<float>(x), wf = cast<float>(w), bf = cast<float>(b);
    std::vector<float> outf(N * OC, 7.0f);
    matmul_fwd(outf.data(), xf.data(), wf.data(), with_bias ? bf.data() : nullptr, N, IC, OC);
    CHECK(rel_diff(outf, ref) < 1e-6);
  }
  // Backward: dinp = dout·w, dw = dout^T·x, dbias = column sums.
  Vec dx(N * IC, 0.0), dw(OC * IC, 0.0), db(OC, 0.0);
  matmul_bwd(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), N, IC, OC);
  Vec rdx(N * IC, 0.0), rdw(OC * IC, 0.0), rdb(OC, 0.0);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o) {
      const double g = dout[size_t(n) * OC + o];
      rdb[o] += g;
      for (int i = 0; i < IC; ++i) {
        rdx[size_t(n) * IC + i] += g * w[size_t(o) * IC + i];
        rdw[size_t(o) * IC + i] += g * x[size_t(n) * IC + i];
      }
    }
  CHECK(max_abs_diff(dx, rdx) < 1e-12);
  CHECK(max_abs_diff(dw, rdw) < 1e-12);
  CHECK(max_abs_diff(db, rdb) < 1e-12);
}

TEST_CASE("matmul at LM-head-like shapes (cut by columns, or into at most 4 row blocks) equals float64 loops", "[ops]") {
  const uint64_t seed = 23;
  CAPTURE(seed);
  pg::Rng rng(seed);
  // OC > N: the forward is cut by output columns; OC x IC > 2^20: the input gradient by at most
  // 4 blocks of rows; the weight gradient by rows of dw.
  const int N = 300, IC = 24, OC = 47000;
  const Vec x = randn(rng, N * IC), w = randn(rng, int64_t(OC) * IC), dout = randn(rng, int64_t(N) * OC);
  const auto xf = cast<float>(x), wf = cast<float>(w), df = cast<float>(dout);
  std::vector<float> out(size_t(N) * OC, std::nanf("")), dx(size_t(N) * IC, 0.f), dw(size_t(OC) * IC, 0.f);
  matmul_fwd(out.data(), xf.data(), wf.data(), nullptr, N, IC, OC);
  matmul_bwd(dx.data(), dw.data(), (float*)nullptr, df.data(), xf.data(), wf.data(), N, IC, OC);
  CHECK(rel_diff(out, naive_matmul(x, w, nullptr, N, IC, OC)) < 1e-6);
  Vec rdx(size_t(N) * IC, 0.0), rdw(size_t(OC) * IC, 0.0);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o) {
      const double g = dout[size_t(n) * OC + o];
      for (int i = 0; i < IC; ++i) {
        rdx[size_t(n) * IC + i] += g * w[size_t(o) * IC + i];
        rdw[size_t(o) * IC + i] += g * x[size_t(n) * IC + i];
      }
    }
  CHECK(rel_diff(dx, rdx) < 1e-5);
  CHECK(rel_diff(dw, rdw) < 1e-5);
}

TEST_CASE("embedding forward adds the token row and the position row", "[ops]") {
  const uint64_t seed = 20;
  CAPTURE(seed);
  pg::Rng rng(seed);
  const int B = 3, Tn = 4, C = 5, V = 7;
  const auto tokens = rand_ints(rng, B * Tn, V);
  const Vec wte = randn(rng, V * C), wpe = randn(rng, (Tn + 2) * C);  // wpe may be longer
  Vec out(B * Tn * C), out_nopos(B * Tn * C);
  embedding_fwd(out.data(), tokens.data(), wte.data(), wpe.data(), B, Tn, C);
  embedding_fwd(out_nopos.data(), tokens.data(), wte.data(), nullptr, B, Tn, C);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < Tn; ++t)
      for (int c = 0; c < C; ++c) {
        const size_t o = (size_t(b) * Tn + t) * C + c;
        const double e = wte[size_t(tokens[size_t(b) * Tn + t]) * C + c];
        REQUIRE(out[o] == e + wpe[size_t(t) * C + c]);
        REQUIRE(out_nopos[o] == e);
      }
}

TEST_CASE("attention forward equals the naive causal-softmax formula", "[ops]") {
  const uint64_t seed = 22;
  CAPTURE(seed);
  pg::Rng rng(seed);
  const int B = 2, Tn = 7, NH = 3, hs = 5;
  const int64_t n = int64_t(B) * Tn * NH * hs;
  const double scale = 1.0 / std::sqrt(double(hs));
  const Vec q = randn(rng, n), k = randn(rng, n), v = randn(rng, n);
  Vec out(n), probs(size_t(B) * NH * Tn * Tn, std::nan(""));
  attention_fwd(out.data(), probs.data(), q.data(), k.data(), v.data(), B, Tn, NH, hs, scale);
  Vec ref_out, ref_probs;
  naive_attention(ref_out, ref_probs, q, k, v, B, Tn, NH, hs, scale);
  CHECK(max_abs_diff(out, ref_out) < 1e-12);
  CHECK(max_abs_diff(probs, ref_probs) < 1e-12);
  for (int64_t row = 0; row < int64_t(B) * NH * Tn; ++row) {  // rows sum to 1, zero above diagonal
    const int64_t t = row % Tn;
    double s = 0.0;
    for (int64_t j = 0; j < Tn; ++j) {
      const double p = probs[size_t(row * Tn + j)];
      if (j > t) REQUIRE(p == 0.0);
      s += p;
    }
    REQUIRE(std::abs(s - 1.0) < 1e-12);
  }
}

TEST_CASE("layernorm rows have mean 0 and variance 1 before the gain", "[ops]") {
  const uint64_t seed = 23;
  CAPTURE(seed);
  pg::Rng rng(seed);
  const int N = 5, C = 64;
  const double eps = 1e-5;
  Vec x = randn(rng, N * C, 3.0);
  for (int r = 0; r < N; ++r)
    for (int c = 0; c < C; ++c) x[size_t(r) * C + c] += 2.0 * r - 3.0;  // different row means
  const Vec ones(C, 1.0), g = randn(rng, C), b = randn(rng, C);
  Vec xhat(N * C), mean(N), rstd(N);
  layernorm_fwd(xhat.data(), mean.data(), rstd.data(), x.data(), ones.data(), nullptr, N, C, eps);
  for (int r = 0; r < N; ++r) {
    CAPTURE(r);
    double m = 0.0, var_in = 0.0, var_out = 0.0;
    for (int c = 0; c < C; ++c) m += x[size_t(r) * C + c] / C;
    for (int c = 0; c < C; ++c) {
      var_in += (x[size_t(r) * C + c] - m) * (x[size_t(r) * C + c] - m) / C;
      var_out += xhat[size_t(r) * C + c] * xhat[size_t(r) * C + c] / C;
    }
    double out_mean = 0.0;
    for (int c = 0; c < C; ++c) out_mean += xhat[size_t(r) * C + c] / C;
    CHECK(std::abs(out_mean) < 1e-12);
    CHECK(std::abs(var_out - var_in / (var_in + eps)) < 1e-12);  // = 1 up to eps
    CHECK(std::abs(mean[r] - m) < 1e-12);
    CHECK(std::abs(rstd[r] - 1.0 / std::sqrt(var_in + eps)) < 1e-12);
  }
  // With a gain and bias: out = xhat·gain + bias.
  Vec out(N * C);
  layernorm_fwd(out.data(), mean.data(), rstd.data(), x.data(), g.data(), b.data(), N, C, eps);
  Vec ref(N * C);
  for (int r = 0; r < N; ++r)
    for (int c = 0; c < C; ++c) ref[size_t(r) * C + c] = xhat[size_t(r) * C + c] * g[c] + b[c];
  CHECK(max_abs_diff(out, ref) < 1e-12);
}

TEST_CASE("rmsnorm rows have mean square 1 before the gain", "[ops]") {
  const uint64_t seed = 24;
  CAPTURE(seed);
  pg::Rng rng(seed);
  const int N = 4, C = 32;
  const double eps = 1e-6;
  const Vec x = randn(rng, N * C, 2.0), g = randn(rng, C);
  Vec out(N * C), rstd(N), outg(N * C);
  rmsnorm_fwd(out.data(), rstd.data(), x.data(), nullptr, N, C, eps);
  rmsnorm_fwd(outg.data(), rstd.data(), x.data(), g.data(), N, C, eps);
  for (int r = 0; r < N; ++r) {
    double ms_in = 0.0, ms_out = 0.0;
    for (int c = 0; c < C; ++c) {
      ms_in += x[size_t(r) * C + c] * x[size_t(r) * C + c] / C;
      ms_out += out[size_t(r) * C + c] * out[size_t(r) * C + c] / C;
      CHECK(std::abs(outg[size_t(r) * C + c] - out[size_t(r) * C + c] * g[c]) < 1e-12);
    }
    CHECK(std::abs(ms_out - ms_in / (ms_in + eps)) < 1e-12);
    CHECK(std::abs(rstd[r] - 1.0 / std::sqrt(ms_in + eps)) < 1e-12);
  }
}

TEST_CASE("rope preserves norms, leaves position 0 alone, and rope_bwd undoes rope_fwd", "[ops]") {
  const uint64_t seed = 25;
  CAPTURE(seed);
  pg::Rng rng(seed);
  const int B = 2, Tn = 9, NH = 3, hs = 8;
  const int64_t n = int64_t(B) * Tn * NH * hs;
  const double theta = 10000.0;
  const Vec x = randn(rng, n);
  Vec y = x;
  rope_fwd(y.data(), B, Tn, NH, hs, theta);
  const int half = hs / 2;
  for (int64_t head = 0; head < n / hs; ++head) {  // each pair keeps its length
    const int64_t t = (head / NH) % Tn;
    for (int i = 0; i < half; ++i) {
      const size_t a = size_t(head * hs + i), b = a + half;
      CHECK(std::hypot(y[a], y[b]) == Approx(std::hypot(x[a], x[b])).epsilon(1e-13));
      if (t == 0) CHECK((y[a] == x[a] && y[b] == x[b]));
    }
  }
  Vec back = y;
  rope_bwd(back.data(), B, Tn, NH, hs, theta);
  CHECK(max_abs_diff(back, x) < 1e-13);
  // Pair 0 turns by exactly t radians per position.
  const int64_t t = 3, h = 1;
  const size_t a = size_t(((0 * Tn + t) * NH + h) * hs), b = a + half;
  CHECK(y[a] == Approx(x[a] * std::cos(3.0) - x[b] * std::sin(3.0)).margin(1e-13));
  CHECK(y[b] == Approx(x[a] * std::sin(3.0) + x[b] * std::cos(3.0)).margin(1e-13));
}

TEST_CASE("rope makes q·k depend only on the relative position", "[ops]") {
  const uint64_t seed = 26;
  CAPTURE(seed);
  pg::Rng rng(seed);
  const int Tn = 12, hs = 16;
  const Vec q0 = randn(rng, hs), k0 = randn(rng, hs);
  // Place the same q and k at every position of one sequence (B = 1, NH = 1).
  Vec q(size_t(Tn) * hs), k(size_t(Tn) * hs);
  for (int t = 0; t < Tn; ++t)
    for (int i = 0; i < hs; ++i) q[size_t(t) * hs + i] = q0[i], k[size_t(t) * hs + i] = k0[i];
  rope_fwd(q.data(), 1, Tn, 1, hs, 500.0);
  rope_fwd(k.data(), 1, Tn, 1, hs, 500.0);
  const auto qk = [&](int tq, int tk) {
    double s = 0.0;
    for (int i = 0; i < hs; ++i) s += q[size_t(tq) * hs + i] * k[size_t(tk) * hs + i];
    return s;
  };
  CHECK(qk(5, 2) == Approx(qk(9, 6)).epsilon(1e-12));
  CHECK(std::abs(qk(5, 2) - qk(5, 3)) > 1e-3);  // and it does depend on it
  CHECK(qk(7, 7) == Approx(qk(1, 1)).epsilon(1e-12));
}

TEST_CASE("cross-entropy equals -log softmax[target] computed naively; argmax count", "[ops]") {
  const uint64_t seed = 27;
  CAPTURE(seed);
  pg::Rng rng(seed);
  const int N = 9, V = 31;
  Vec logits = randn(rng, N * V, 3.0);
  auto targets = rand_ints(rng, N, V);
  // Make rows 0 and 1 predict their target, and row 2 tie its maximum at two indices.
  for (int r = 0; r < 2; ++r) logits[size_t(r) * V + targets[r]] = 50.0;
  targets[2] = 7;
  logits[size_t(2) * V + 3] = 60.0;
  logits[size_t(2) * V + 7] = 60.0;  // tie: argmax is 3, the lower index, so row 2 is wrong
  Vec losses(N);
  int64_t n_correct = -1;
  const double mean =
      cross_entropy_fwd(losses.data(), &n_correct, logits.data(), targets.data(), N, V);
  double ref_mean = 0.0;
  int64_t ref_correct = 0;
  for (int r = 0; r < N; ++r) {
    double z = 0.0;
    int am = 0;
    for (int j = 0; j < V; ++j) {
      z += std::exp(logits[size_t(r) * V + j]);
      if (logits[size_t(r) * V + j] > logits[size_t(r) * V + am]) am = j;
    }
    const double ref = -std::log(std::exp(logits[size_t(r) * V + targets[r]]) / z);
    CHECK(losses[r] == Approx(ref).epsilon(1e-12));
    ref_mean += ref / N;
    ref_correct += (am == targets[r]);
  }
  CHECK(mean == Approx(ref_mean).epsilon(1e-12));
  CHECK(n_correct == ref_correct);
  CHECK(n_correct >= 2);
}

TEST_CASE("fp32 cross-entropy matches float64 at the GPT-2 vocabulary size", "[ops]") {
  const uint64_t seed = 29;
  CAPTURE(seed);
  pg::Rng rng(seed);
  const int N = 6, V = 50257;  // V % 8 = 1: the vector loops' tail is exercised too
  // Logits spread wide enough that many e^(x - max) underflow in fp32.
  Vec logits = randn(rng, int64_t(N) * V, 12.0);
  const auto targets = rand_ints(rng, N, V);
  logits[size_t(V) - 1] = 80.0;  // row 0: the maximum sits in the tail lanes
  const auto lf = cast<float>(logits);
  const Vec lf_as_double(lf.begin(), lf.end());  // compare on identical inputs
  Vec loss(N), grad(size_t(N) * V);
  std::vector<float> lossf(N), gradf(size_t(N) * V);
  int64_t c = 0, cf = 0;
  const double m = cross_entropy_fwd(loss.data(), &c, lf_as_double.data(), targets.data(), N, V);
  const double mf = cross_entropy_fwd(lossf.data(), &cf, lf.data(), targets.data(), N, V);
  CHECK(rel_diff(lossf, loss) < 1e-6);
  CHECK(mf == Approx(m).epsilon(1e-6));
  CHECK(cf == c);
  cross_entropy_bwd(grad.data(), lf_as_double.data(), targets.data(), N, V, 0.5);
  cross_entropy_bwd(gradf.data(), lf.data(), targets.data(), N, V, 0.5);
  CHECK(rel_diff(gradf, grad) < 1e-6);
  double worst = 0.0;  // elementwise, relative to the row's largest probability
  for (size_t i = 0; i < grad.size(); ++i) worst = std::max(worst, std::abs(gradf[i] - grad[i]));
  CHECK(worst < 1e-6);
}

TEST_CASE("cross-entropy stays finite for huge logits (fp32)", "[ops]") {
  const int V = 5;
  const std::vector<float> logits = {1000.f, 999.f, -1000.f, 500.f, 1000.f};
  const std::vector<int32_t> target = {1};
  std::vector<float> loss(1), grad(V);
  const double l = cross_entropy_fwd(loss.data(), nullptr, logits.data(), target.data(), 1, V);
  const double ref = std::log(2.0 + std::exp(-1.0)) + 1.0;  // logsumexp - 999
  CHECK(l == Approx(ref).epsilon(1e-6));
  cross_entropy_bwd(grad.data(), logits.data(), target.data(), 1, V, 1.0);
  double s = 0.0;
  for (float g : grad) {
    REQUIRE(std::isfinite(g));
    s += g;
  }
  CHECK(std::abs(s) < 1e-6);  // softmax sums to 1, the one-hot takes 1 back
}

TEST_CASE("gelu, relu2, softcap, axpy, add forward values", "[ops]") {
  const Vec x = {-3.0, -1.0, -0.25, 0.0, 0.5, 2.0, 6.0};
  const int n = int(x.size());
  Vec out(n);
  gelu_fwd(out.data(), x.data(), n);
  for (int i = 0; i < n; ++i) {
    const double u = std::sqrt(2.0 / M_PI) * (x[i] + 0.044715 * x[i] * x[i] * x[i]);
    CHECK(out[i] == Approx(0.5 * x[i] * (1.0 + std::tanh(u))).epsilon(1e-14));
  }
  CHECK(out[3] == 0.0);
  CHECK(out[6] == Approx(6.0).epsilon(1e-8));
  relu2_fwd(out.data(), x.data(), n);
  for (int i = 0; i < n; ++i) CHECK(out[i] == (x[i] > 0 ? x[i] * x[i] : 0.0));
  softcap_fwd(out.data(), x.data(), n, 2.0);
  for (int i = 0; i < n; ++i) CHECK(out[i] == Approx(2.0 * std::tanh(x[i] / 2.0)).epsilon(1e-14));
  Vec y(n, 1.0);
  axpy(y.data(), x.data(), 0.5, n);
  for (int i = 0; i < n; ++i) CHECK(y[i] == 1.0 + 0.5 * x[i]);
  add(out.data(), x.data(), y.data(), n);
  for (int i = 0; i < n; ++i) CHECK(out[i] == x[i] + y[i]);
  add(y.data(), y.data(), x.data(), n);  // in place
  for (int i = 0; i < n; ++i) CHECK(y[i] == out[i]);
}

TEST_CASE("fp32 ops agree with float64 to ~1e-5 relative", "[ops]") {
  const uint64_t seed = 28;
  CAPTURE(seed);
  pg::Rng rng(seed);
  const double tol = 1e-5;
  const auto f = [](const Vec& v) { return cast<float>(v); };

  SECTION("matmul") {
    const int N = 33, IC = 64, OC = 40;
    const Vec x = randn(rng, N * IC), w = randn(rng, OC * IC), b = randn(rng, OC);
    Vec o(N * OC);
    std::vector<float> of(N * OC);
    matmul_fwd(o.data(), x.data(), w.data(), b.data(), N, IC, OC);
    matmul_fwd(of.data(), f(x).data(), f(w).data(), f(b).data(), N, IC, OC);
    CHECK(rel_diff(of, o) < tol);
  }
  SECTION("embedding") {
    const int B = 2, Tn = 4, C = 8, V = 10;
    const auto tok = rand_ints(rng, B * Tn, V);
    const Vec wte = randn(rng, V * C), wpe = randn(rng, Tn * C);
    Vec o(B * Tn * C);
    std::vector<float> of(B * Tn * C);
    embedding_fwd(o.data(), tok.data(), wte.data(), wpe.data(), B, Tn, C);
    embedding_fwd(of.data(), tok.data(), f(wte).data(), f(wpe).data(), B, Tn, C);
    CHECK(rel_diff(of, o) < tol);
  }
  SECTION("layernorm and rmsnorm") {
    const int N = 16, C = 48;
    const Vec x = randn(rng, N * C, 2.0), g = randn(rng, C), b = randn(rng, C);
    Vec o(N * C), m(N), rs(N);
    std::vector<float> of(N * C), mf(N), rsf(N);
    layernorm_fwd(o.data(), m.data(), rs.data(), x.data(), g.data(), b.data(), N, C);
    layernorm_fwd(of.data(), mf.data(), rsf.data(), f(x).data(), f(g).data(), f(b).data(), N, C);
    CHECK(rel_diff(of, o) < tol);
    CHECK(rel_diff(rsf, rs) < tol);
    const Vec dout = randn(rng, N * C);
    Vec dx(N * C, 0.0), dg(C, 0.0), db(C, 0.0);
    std::vector<float> dxf(N * C, 0.f), dgf(C, 0.f), dbf(C, 0.f);
    layernorm_bwd(dx.data(), dg.data(), db.data(), dout.data(), x.data(), g.data(), m.data(),
                  rs.data(), N, C);
    layernorm_bwd(dxf.data(), dgf.data(), dbf.data(), f(dout).data(), f(x).data(), f(g).data(),
                  mf.data(), rsf.data(), N, C);
    CHECK(rel_diff(dxf, dx) < tol);
    CHECK(rel_diff(dgf, dg) < tol);
    CHECK(rel_diff(dbf, db) < tol);
    rmsnorm_fwd(o.data(), rs.data(), x.data(), g.data(), N, C);
    rmsnorm_fwd(of.data(), rsf.data(), f(x).data(), f(g).data(), N, C);
    CHECK(rel_diff(of, o) < tol);
    rmsnorm_bwd(dx.data(), dg.data(), dout.data(), x.data(), g.data(), rs.data(), N, C);
    rmsnorm_bwd(dxf.data(), dgf.data(), f(dout).data(), f(x).data(), f(g).data(), rsf.data(), N, C);
    CHECK(rel_diff(dxf, dx) < tol);
    CHECK(rel_diff(dgf, dg) < tol);
  }
  SECTION("pointwise, forward and backward") {
    const int n = 1003;  // not a multiple of the vector width
    const Vec x = randn(rng, n, 3.0), dout = randn(rng, n), start = randn(rng, n);
    Vec o(n), d(n);
    std::vector<float> of(n), df(n);
    gelu_fwd(o.data(), x.data(), n);
    gelu_fwd(of.data(), f(x).data(), n);
    CHECK(rel_diff(of, o) < tol);
    d = start, df = f(start);  // backwards accumulate onto what is there
    gelu_bwd(d.data(), dout.data(), x.data(), n);
    gelu_bwd(df.data(), f(dout).data(), f(x).data(), n);
    CHECK(rel_diff(df, d) < tol);
    relu2_fwd(o.data(), x.data(), n);
    relu2_fwd(of.data(), f(x).data(), n);
    CHECK(rel_diff(of, o) < tol);
    d = start, df = f(start);
    relu2_bwd(d.data(), dout.data(), x.data(), n);
    relu2_bwd(df.data(), f(dout).data(), f(x).data(), n);
    CHECK(rel_diff(df, d) < tol);
    softcap_fwd(o.data(), x.data(), n, 5.0);
    softcap_fwd(of.data(), f(x).data(), n, 5.0);
    CHECK(rel_diff(of, o) < tol);
    softcap_bwd(d.data(), dout.data(), o.data(), n, 5.0);
    softcap_bwd(df.data(), f(dout).data(), of.data(), n, 5.0);
    CHECK(rel_diff(df, d) < tol);
  }
  SECTION("rope and attention") {
    const int B = 2, Tn = 16, NH = 2, hs = 8;
    const int64_t n = int64_t(B) * Tn * NH * hs;
    Vec q = randn(rng, n), k = randn(rng, n), v = randn(rng, n);
    auto qf = f(q), kf = f(k), vf = f(v);
    rope_fwd(q.data(), B, Tn, NH, hs, 10000.0);
    rope_fwd(qf.data(), B, Tn, NH, hs, 10000.0);
    CHECK(rel_diff(qf, q) < tol);
    Vec o(n), p(size_t(B) * NH * Tn * Tn);
    std::vector<float> of(n), pf(p.size());
    attention_fwd(o.data(), p.data(), q.data(), k.data(), v.data(), B, Tn, NH, hs, 0.35);
    attention_fwd(of.data(), pf.data(), qf.data(), kf.data(), vf.data(), B, Tn, NH, hs, 0.35);
    CHECK(rel_diff(of, o) < tol);
    CHECK(rel_diff(pf, p) < tol);
    const Vec dout = randn(rng, n);
    Vec dq(n, 0.0), dk(n, 0.0), dv(n, 0.0);
    std::vector<float> dqf(n, 0.f), dkf(n, 0.f), dvf(n, 0.f);
    attention_bwd(dq.data(), dk.data(), dv.data(), dout.data(), p.data(), q.data(), k.data(),
                  v.data(), B, Tn, NH, hs, 0.35);
    attention_bwd(dqf.data(), dkf.data(), dvf.data(), f(dout).data(), pf.data(), qf.data(),
                  kf.data(), vf.data(), B, Tn, NH, hs, 0.35);
    CHECK(rel_diff(dqf, dq) < tol);
    CHECK(rel_diff(dkf, dk) < tol);
    CHECK(rel_diff(dvf, dv) < tol);
  }
  SECTION("cross-entropy") {
    const int N = 12, V = 1000;
    const Vec logits = randn(rng, N * V, 4.0);
    const auto tgt = rand_ints(rng, N, V);
    Vec l(N);
    std::vector<float> lf(N);
    const double m = cross_entropy_fwd(l.data(), nullptr, logits.data(), tgt.data(), N, V);
    const double mf = cross_entropy_fwd(lf.data(), nullptr, f(logits).data(), tgt.data(), N, V);
    CHECK(rel_diff(lf, l) < tol);
    CHECK(mf == Approx(m).epsilon(tol));
    Vec d(N * V);
    std::vector<float> df(N * V);
    cross_entropy_bwd(d.data(), logits.data(), tgt.data(), N, V, 1.0 / N);
    cross_entropy_bwd(df.data(), f(logits).data(), tgt.data(), N, V, 1.0 / N);
    CHECK(rel_diff(df, d) < tol);
    // From the forward's row logsumexps (the trainer's path): float against double, and against
    // the recomputing backward of the same precision.
    std::vector<float> lsef(N), dlf(N * V);
    cross_entropy_fwd(lf.data(), nullptr, f(logits).data(), tgt.data(), N, V, lsef.data());
    cross_entropy_bwd_lse(dlf.data(), f(logits).data(), lsef.data(), tgt.data(), N, V, 1.0 / N);
    CHECK(rel_diff(dlf, d) < tol);
    CHECK(rel_diff(dlf, df) < tol);
  }
}
