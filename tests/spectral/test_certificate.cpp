// The Lipschitz certificate (src/spectral/certificate.hpp, docs/lipschitz.md) against measured
// lower bounds of the network's Lipschitz constant on tiny float64 models: the largest
// ||f(x) - f(y)|| / ||x - y|| over random input pairs, and power iteration on the Jacobian built
// by central finite differences (its top direction's ratio in the certificate's norm).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/ops.hpp"
#include "common/svd.hpp"
#include "config/config.hpp"
#include "core/rng.hpp"
#include "model/cpu_gpt.hpp"
#include "model/gpt.hpp"
#include "spectral/certificate.hpp"
#include "spectral/constrain.hpp"

using namespace pg;

namespace {

// max_t ||x_t||_2 over the rows of x[Tn, C]: the certificate's norm.
double norm_inf2(const std::vector<double>& x, int Tn, int C) {
  double m = 0.0;
  for (int t = 0; t < Tn; ++t) {
    double s = 0.0;
    for (int c = 0; c < C; ++c) s += x[size_t(t * C + c)] * x[size_t(t * C + c)];
    m = std::max(m, std::sqrt(s));
  }
  return m;
}

struct Tiny {
  Config cfg;
  ParamTable table;
  std::vector<double> P;
  int Tn, C, V;
};

Tiny make_model(const std::vector<std::string>& extra, uint64_t seed, double w_scale) {
  std::vector<std::string> sets = {"model.variant=lipschitz", "model.norm=none", "model.bias=false",
                                   "model.tie_embeddings=false", "model.n_layer=2", "model.n_head=2",
                                   "model.d_model=8", "model.d_ff=16", "model.vocab_size=7", "model.seq_len=4"};
  sets.insert(sets.end(), extra.begin(), extra.end());
  Tiny m{default_config(sets), {}, {}, 0, 0, 0};
  m.table = with_constraints(m.cfg, build_gpt_params(m.cfg));
  m.Tn = m.cfg.model.seq_len, m.C = m.cfg.model.d_model, m.V = m.cfg.model.vocab_size;
  Rng rng(seed);
  m.P.assign(size_t(m.table.total()), 0.0);
  for (const auto& p : m.table.entries())
    for (int64_t i = 0; i < p.numel; ++i) m.P[size_t(p.offset + i)] = w_scale * rng.normal() / std::sqrt(double(p.cols()));
  return m;
}

// log10 of the certificate with exact (Jacobi SVD) sigma_max of every matrix.
double exact_log10_bound(const Tiny& m) {
  return log10_lipschitz_bound(m.cfg, [&](const std::string& name) {
    const ParamInfo& p = m.table.get(name);
    return testing::singular_values(m.P.data() + p.offset, int(p.rows()), int(p.cols()))[0];
  });
}

// A point of the domain: every row with ||x_t|| <= R_0 (half of them on the boundary).
std::vector<double> domain_point(const Tiny& m, Rng& rng) {
  const double R0 = lipschitz_input_radius(m.cfg);
  std::vector<double> x(size_t(m.Tn * m.C));
  for (int t = 0; t < m.Tn; ++t) {
    double s = 0.0;
    for (int c = 0; c < m.C; ++c) s += (x[size_t(t * m.C + c)] = rng.normal()) * x[size_t(t * m.C + c)];
    const double r = (rng.uniform() < 0.5 ? 1.0 : rng.uniform()) * R0 / std::sqrt(s);
    for (int c = 0; c < m.C; ++c) x[size_t(t * m.C + c)] *= r;
  }
  return x;
}

// The largest ratio found: random pairs (near and far), then the Jacobian's top directions.
double lower_bound(const Tiny& m, uint64_t seed) {
  CpuGpt<double> model(m.cfg, m.table, 1);
  const int n_in = m.Tn * m.C, n_out = m.Tn * m.V;
  auto f = [&](const std::vector<double>& x) {
    model.forward_from_embeddings(m.P.data(), x.data(), 1, m.Tn);
    return std::vector<double>(model.logits(), model.logits() + n_out);
  };
  auto ratio = [&](const std::vector<double>& x, const std::vector<double>& y) {
    const std::vector<double> fx = f(x), fy = f(y);
    std::vector<double> dx(static_cast<size_t>(n_in)), dy(static_cast<size_t>(n_out));
    for (int i = 0; i < n_in; ++i) dx[size_t(i)] = x[size_t(i)] - y[size_t(i)];
    for (int i = 0; i < n_out; ++i) dy[size_t(i)] = fx[size_t(i)] - fy[size_t(i)];
    return norm_inf2(dy, m.Tn, m.V) / norm_inf2(dx, m.Tn, m.C);
  };
  Rng rng(seed);
  double best = 0.0;
  for (int trial = 0; trial < 40; ++trial) {
    const std::vector<double> x = domain_point(m, rng), y = domain_point(m, rng);
    best = std::max(best, ratio(x, y));
    std::vector<double> z = x;
    for (auto& e : z) e += 1e-4 * rng.normal();
    best = std::max(best, ratio(x, z));
  }
  // Jacobian at a few domain points by central differences, then power iteration on J^T J.
  const double h = 1e-5;
  for (int trial = 0; trial < 6; ++trial) {
    const std::vector<double> x = domain_point(m, rng);
    std::vector<double> J(size_t(n_out) * n_in);
    for (int j = 0; j < n_in; ++j) {
      std::vector<double> xp = x, xm = x;
      xp[size_t(j)] += h, xm[size_t(j)] -= h;
      const auto fp = f(xp), fm = f(xm);
      for (int i = 0; i < n_out; ++i) J[size_t(i) * n_in + j] = (fp[size_t(i)] - fm[size_t(i)]) / (2 * h);
    }
    std::vector<double> v(static_cast<size_t>(n_in)), w(static_cast<size_t>(n_out));
    for (auto& e : v) e = rng.normal();
    for (int it = 0; it < 100; ++it) {
      for (int i = 0; i < n_out; ++i) {
        double s = 0.0;
        for (int j = 0; j < n_in; ++j) s += J[size_t(i) * n_in + j] * v[size_t(j)];
        w[size_t(i)] = s;
      }
      double nv = 0.0;
      for (int j = 0; j < n_in; ++j) {
        double s = 0.0;
        for (int i = 0; i < n_out; ++i) s += J[size_t(i) * n_in + j] * w[size_t(i)];
        v[size_t(j)] = s;
        nv += s * s;
      }
      for (auto& e : v) e /= std::sqrt(nv);
    }
    for (int i = 0; i < n_out; ++i) {  // J v in the certificate's norm
      double s = 0.0;
      for (int j = 0; j < n_in; ++j) s += J[size_t(i) * n_in + j] * v[size_t(j)];
      w[size_t(i)] = s;
    }
    best = std::max(best, norm_inf2(w, m.Tn, m.V) / norm_inf2(v, m.Tn, m.C));
    // and the same direction as a finite step from x
    std::vector<double> y = x;
    for (int j = 0; j < n_in; ++j) y[size_t(j)] += 1e-3 * v[size_t(j)];
    best = std::max(best, ratio(x, y));
  }
  return best;
}

}  // namespace

TEST_CASE("certificate: never below a measured lower bound of the Lipschitz constant", "[spectral]") {
  struct Case {
    std::vector<std::string> sets;
    double w_scale;
  };
  const std::vector<Case> cases = {
      {{"model.pos=rope"}, 1.0},
      {{"model.pos=rope", "model.attn_scale=4"}, 2.0},  // strong attention: the R^2 term matters
      {{"model.pos=learned"}, 1.5},
      {{"model.pos=rope", "model.n_layer=1", "model.n_head=1"}, 3.0},
  };
  uint64_t seed = 700;
  for (const auto& c : cases) {
    ++seed;
    const Tiny m = make_model(c.sets, seed, c.w_scale);
    const double cert = std::pow(10.0, exact_log10_bound(m));
    const double lb = lower_bound(m, seed + 1000);
    CAPTURE(seed, c.w_scale, cert, lb);
    INFO("variant: " << nlohmann::json(c.sets).dump());
    REQUIRE(lb > 0.0);
    REQUIRE(cert >= lb);
  }
}

TEST_CASE("certificate: the w_max bound dominates the measured one after projection", "[spectral]") {
  Tiny m = make_model({"model.pos=rope", "spectral.method=hardcap", "spectral.w_max=1.5",
                       "spectral.roles=attn,mlp,head"},
                      91, 3.0);
  // Project in float32 through the trainer's entry point, then check in float64.
  std::vector<float> Pf(m.P.begin(), m.P.end());
  SpectralState state;
  project_constrained(m.table, Pf, state, m.cfg, 0.01, 1);
  m.P.assign(Pf.begin(), Pf.end());
  const LipschitzCertificate c = lipschitz_certificate(m.cfg, m.table, Pf);
  REQUIRE(c.log10_bound_wmax.has_value());
  CAPTURE(c.log10_bound, *c.log10_bound_wmax);
  REQUIRE(c.log10_bound <= *c.log10_bound_wmax + 1e-4);  // measured sigma <= w_max (1 + 1e-4)
  REQUIRE(std::abs(c.log10_bound - exact_log10_bound(m)) < 1e-3);
  REQUIRE(std::pow(10.0, c.log10_bound) * (1 + 1e-3) >= lower_bound(m, 5));
  // hammer bounds only sigma_1, so it gets no w_max certificate.
  Config hammer = m.cfg;
  hammer.spectral.method = "hammer";
  REQUIRE_FALSE(lipschitz_certificate(hammer, m.table, Pf).log10_bound_wmax.has_value());
  // Every embedding row was max-norm projected: rows of RMS <= 1, which is the domain R_0 assumes.
  const ParamInfo& wte = m.table.get("wte");
  for (int64_t r = 0; r < wte.rows(); ++r) {
    double s = 0.0;
    for (int64_t j = 0; j < wte.cols(); ++j) s += double(Pf[size_t(wte.offset + r * wte.cols() + j)]) * Pf[size_t(wte.offset + r * wte.cols() + j)];
    REQUIRE(std::sqrt(s / double(wte.cols())) <= 1.0 + 1e-6);
  }
}

TEST_CASE("certificate: GELU divided by kLipschitzGeluDivisor is 1-Lipschitz and |gelu(z)| <= |z|", "[spectral]") {
  const int n = 200001;
  std::vector<double> z(n), g(n), d(n, 0.0), ones(n, 1.0);
  for (int i = 0; i < n; ++i) z[size_t(i)] = -10.0 + 20.0 * i / (n - 1);
  cpu::gelu_fwd(g.data(), z.data(), n);
  cpu::gelu_bwd(d.data(), ones.data(), z.data(), n);
  double max_slope = 0.0;
  for (int i = 0; i < n; ++i) {
    max_slope = std::max(max_slope, std::abs(d[size_t(i)]));
    REQUIRE(std::abs(g[size_t(i)]) <= std::abs(z[size_t(i)]) + 1e-15);
  }
  CAPTURE(max_slope);
  REQUIRE(max_slope <= kGeluMaxSlope);
  REQUIRE(max_slope > kGeluMaxSlope - 1e-6);
  REQUIRE(kGeluMaxSlope / kLipschitzGeluDivisor <= 1.0);
}
