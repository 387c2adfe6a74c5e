// Newton-Schulz coefficient schedules: keller5, and the Polar Express composition of per-step
// minimax quintics computed here by Remez (see newton_schulz.hpp for the recipe and its checks).
#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "core/error.hpp"
#include "optim/newton_schulz.hpp"

namespace pg {
namespace {

double quintic(const NsCoeffs& k, double x) {
  const double x2 = x * x;
  return x * (k.a + x2 * (k.b + x2 * k.c));
}

NsCoeffs scaled(const NsCoeffs& k, double s) { return {k.a * s, k.b * s, k.c * s}; }

// p(x / s): tolerates inputs up to s times the interval the step was designed for.
NsCoeffs divided_by_safety(const NsCoeffs& k, double s) {
  return {k.a / s, k.b / (s * s * s), k.c / (s * s * s * s * s)};
}

// Solves M x = r for 4x4 M by Gaussian elimination with partial pivoting.
std::array<double, 4> solve4(std::array<std::array<double, 4>, 4> M, std::array<double, 4> r) {
  for (int i = 0; i < 4; ++i) {
    int p = i;
    for (int j = i + 1; j < 4; ++j)
      if (std::fabs(M[j][i]) > std::fabs(M[p][i])) p = j;
    std::swap(M[i], M[p]);
    std::swap(r[i], r[p]);
    PG_CHECK(M[i][i] != 0.0, "Remez: singular system");
    for (int j = i + 1; j < 4; ++j) {
      const double f = M[j][i] / M[i][i];
      for (int k = i; k < 4; ++k) M[j][k] -= f * M[i][k];
      r[j] -= f * r[i];
    }
  }
  std::array<double, 4> x{};
  for (int i = 3; i >= 0; --i) {
    double s = r[i];
    for (int k = i + 1; k < 4; ++k) s -= M[i][k] * x[k];
    x[i] = s / M[i][i];
  }
  return x;
}

constexpr NsCoeffs kQuinticNS{15.0 / 8.0, -10.0 / 8.0, 3.0 / 8.0};
// A step whose (undivided) polynomial is this close to 1 on its interval ends the optimisation.
constexpr double kConvergedError = 1e-6;

}  // namespace

NsCoeffs ns_remez_quintic(double l, double u, double* max_error) {
  PG_CHECK(l > 0.0 && u > l, "ns_remez_quintic needs 0 < l < u");
  if (l / u >= 1.0 - 5e-6) {
    if (max_error) *max_error = 0.0;
    return {kQuinticNS.a / u, kQuinticNS.b / (u * u * u), kQuinticNS.c / (u * u * u * u * u)};
  }
  // Equioscillation: p(x) - 1 = -E, +E, -E, +E at l < q < r < u, with q, r the interior extrema.
  double q = (3 * l + u) / 4, r = (l + 3 * u) / 4;
  double E = HUGE_VAL;
  NsCoeffs k{};
  for (int it = 0; it < 100; ++it) {
    const std::array<double, 4> xs{l, q, r, u};
    std::array<std::array<double, 4>, 4> M{};
    std::array<double, 4> rhs{};
    for (int i = 0; i < 4; ++i) {
      const double x = xs[i], x3 = x * x * x;
      // p(x) + E = 1 where the error is -E, p(x) - E = 1 where it is +E.
      M[i] = {x, x3, x3 * x * x, (i % 2 == 0) ? 1.0 : -1.0};
      rhs[i] = 1.0;
    }
    const auto sol = solve4(M, rhs);
    k = {sol[0], sol[1], sol[2]};
    const double E_new = sol[3];
    const bool done = std::fabs(E_new - E) < 1e-15;
    E = E_new;
    if (done) break;
    // p'(x) = a + 3b x^2 + 5c x^4 = 0  =>  x^2 = (-3b -+ sqrt(9b^2 - 20ac)) / (10c).
    const double disc = 9 * k.b * k.b - 20 * k.a * k.c;
    if (!(disc > 0.0) || k.c == 0.0) break;
    double q2 = (-3 * k.b - std::sqrt(disc)) / (10 * k.c), r2 = (-3 * k.b + std::sqrt(disc)) / (10 * k.c);
    if (q2 > r2) std::swap(q2, r2);
    if (!(q2 > l * l && r2 < u * u && q2 < r2)) break;  // extrema left the interval: keep the last solve
    q = std::sqrt(q2);
    r = std::sqrt(r2);
  }
  if (max_error) *max_error = E;
  return k;
}

std::vector<NsCoeffs> ns_schedule_keller5(int steps) {
  PG_CHECK(steps >= 0, "ns_schedule_keller5: steps must be >= 0");
  return std::vector<NsCoeffs>(size_t(steps), NsCoeffs{3.4445, -4.7750, 2.0315});
}

std::vector<NsCoeffs> ns_schedule_polar_express(int steps, double ell, double safety, double cushion) {
  PG_CHECK(steps >= 1, "ns_schedule_polar_express: steps must be >= 1");
  PG_CHECK(ell > 0.0 && ell < 1.0, "ns_schedule_polar_express: ell must be in (0, 1)");
  PG_CHECK(safety >= 1.0, "ns_schedule_polar_express: safety must be >= 1");
  PG_CHECK(cushion >= 0.0 && cushion < 1.0, "ns_schedule_polar_express: cushion must be in [0, 1)");
  std::vector<NsCoeffs> out;
  out.reserve(size_t(steps));
  double l = ell, u = 1.0;
  bool converged = false;
  for (int t = 0; t < steps; ++t) {
    if (converged) {
      out.push_back(kQuinticNS);
      continue;
    }
    const double lo = std::max(l, cushion * u);
    NsCoeffs k = ns_remez_quintic(lo, u);
    // The cushion fitted [lo, u]; re-centre so that l and u err by the same amount.
    if (lo > l) k = scaled(k, 2.0 / (quintic(k, l) + quintic(k, u)));
    converged = 1.0 - quintic(k, l) <= kConvergedError;
    if (t + 1 < steps) k = divided_by_safety(k, safety);
    out.push_back(k);
    l = quintic(k, l);
    u = 2.0 - l;
  }
  return out;
}

std::vector<NsCoeffs> ns_schedule(const std::string& name, int steps, double safety, const std::string& key) {
  if (steps < 1) throw UserError(key + ": Newton-Schulz needs at least 1 step, got " + std::to_string(steps));
  if (name == "keller5") return ns_schedule_keller5(steps);
  if (name == "polar-express") {
    if (!(safety >= 1.0 && safety < 2.0))
      throw UserError(key + ": polar-express safety must be in [1, 2), got " + std::to_string(safety));
    return ns_schedule_polar_express(steps, 1e-3, safety, 0.02);
  }
  throw UserError(key + ": unknown Newton-Schulz schedule '" + name + "' (expected keller5 | polar-express)");
}

double ns_schedule_eval(std::span<const NsCoeffs> schedule, double sigma) {
  for (const auto& k : schedule) sigma = quintic(k, sigma);
  return sigma;
}

double ns_schedule_max_output(std::span<const NsCoeffs> schedule) {
  // The composite oscillates most near 0 (slope prod(a) ~ 1e3), so scan a log grid down to 1e-8
  // as well as a linear one; then refine each of the best sampled local maxima by golden section
  // between its neighbours.
  constexpr int kN = 100000;
  std::vector<double> xs;
  xs.reserve(2 * kN + 2);
  for (int i = 0; i <= kN; ++i) xs.push_back(std::pow(10.0, -8.0 + 8.0 * i / kN));
  for (int i = 1; i <= kN; ++i) xs.push_back(double(i) / kN);
  std::sort(xs.begin(), xs.end());
  xs.erase(std::unique(xs.begin(), xs.end()), xs.end());
  std::vector<double> ys(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) ys[i] = ns_schedule_eval(schedule, xs[i]);

  std::vector<std::pair<double, size_t>> peaks;  // (value, index) of sampled local maxima
  for (size_t i = 0; i < xs.size(); ++i) {
    const bool left = i == 0 || ys[i] >= ys[i - 1];
    const bool right = i + 1 == xs.size() || ys[i] >= ys[i + 1];
    if (left && right) peaks.push_back({ys[i], i});
  }
  std::sort(peaks.begin(), peaks.end(), [](auto& p, auto& q) { return p.first > q.first; });
  if (peaks.size() > 16) peaks.resize(16);

  double best = peaks.empty() ? ys.back() : peaks.front().first;
  const double g = (std::sqrt(5.0) - 1.0) / 2.0;
  for (const auto& [val, i] : peaks) {
    double lo = xs[i == 0 ? 0 : i - 1], hi = xs[std::min(i + 1, xs.size() - 1)];
    double x1 = hi - g * (hi - lo), x2 = lo + g * (hi - lo);
    double f1 = ns_schedule_eval(schedule, x1), f2 = ns_schedule_eval(schedule, x2);
    for (int it = 0; it < 80 && hi - lo > 1e-15 * hi; ++it) {
      if (f1 < f2) {
        lo = x1, x1 = x2, f1 = f2;
        x2 = lo + g * (hi - lo), f2 = ns_schedule_eval(schedule, x2);
      } else {
        hi = x2, x2 = x1, f2 = f1;
        x1 = hi - g * (hi - lo), f1 = ns_schedule_eval(schedule, x1);
      }
    }
    best = std::max({best, val, f1, f2});
  }
  return best;
}

NsPrecision parse_ns_precision(const std::string& s, const std::string& key) {
  if (s == "fp32") return NsPrecision::fp32;
  if (s == "bf16") return NsPrecision::bf16;
  if (s == "fp16") return NsPrecision::fp16;
  throw UserError(key + ": unknown Newton-Schulz precision '" + s + "' (expected fp32 | bf16 | fp16)");
}

}  // namespace pg
