// sigma_max monitoring by the polar route (see monitor.hpp).
#include "spectral/monitor.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "core/error.hpp"
#include "optim/dense.hpp"
#include "optim/newton_schulz.hpp"
#include "spectral/matvec.hpp"

namespace pg {
namespace {

constexpr double kNs3Bias = 1e-5;  // 1 - F_T at the smallest possible top singular value

// X <- 1/2 (3I - X X^T) X on the wide side, after X /= ||X||_F, for each matrix of the batch.
void cubic_ns(float* X, int batch, int rows, int cols, int steps) {
  const bool tall = rows > cols;
  const int m = tall ? cols : rows, n = tall ? rows : cols;
  const size_t mn = size_t(m) * n;
  std::vector<float> x(mn), A(size_t(m) * m), y(mn);
  for (int b = 0; b < batch; ++b) {
    float* Xb = X + size_t(b) * mn;
    if (tall) dense::transpose(Xb, rows, cols, x.data());
    else std::copy(Xb, Xb + mn, x.data());
    const float scale = float(1.0 / (dense::frobenius_norm(x.data(), mn) + 1e-30));
    for (auto& e : x) e *= scale;
    for (int t = 0; t < steps; ++t) {
      dense::syrk(false, m, n, 1.0f, x.data(), n, 0.0f, A.data(), m);
      dense::mirror_upper(A.data(), m);
      for (size_t i = 0; i < mn; ++i) y[i] = 1.5f * x[i];
      dense::gemm(false, false, m, n, m, -0.5f, A.data(), m, x.data(), n, 1.0f, y.data(), n);
      std::swap(x, y);
    }
    if (tall) dense::transpose(x.data(), m, n, Xb);
    else std::copy(x.begin(), x.end(), Xb);
  }
}

// Rayleigh quotient of H = Q^T W after `iters` power iterations.
double polar_power(const float* Q, const float* W, int rows, int cols, int iters) {
  std::vector<double> v(cols), w(rows), h(cols);
  random_unit_vector(v.data(), cols, 0x2545f4914f6cdd1dull + size_t(rows) * cols);
  double rq = 0.0;
  for (int it = 0; it < iters; ++it) {
    matvec(W, rows, cols, v.data(), w.data());    // w = W v
    matvec_t(Q, rows, cols, w.data(), h.data());  // h = Q^T W v = H v
    rq = 0.0;
    for (int j = 0; j < cols; ++j) rq += v[j] * h[j];  // v^T H v, ||v|| = 1
    if (normalize_in_place(h.data(), cols) == 0.0) return 0.0;
    std::swap(v, h);
  }
  return rq;
}

}  // namespace

int ns3_accurate_steps(int rows, int cols) {
  double x = 1.0 / std::sqrt(double(std::max(1, std::min(rows, cols))));
  int t = 0;
  while (1.0 - x > kNs3Bias && t < 60) x = 1.5 * x - 0.5 * x * x * x, ++t;
  return t;
}

void sigma_max_polar_batched(const float* W, int batch, int rows, int cols, const std::string& method,
                             int iters, std::span<double> out) {
  PG_CHECK(int(out.size()) >= batch, "sigma_max_polar_batched: out too small");
  PG_CHECK(iters >= 1, "sigma_max_polar: iters must be >= 1");
  if (method != "ns5-fast" && method != "ns3-accurate")
    throw UserError("sigma_max_polar: unknown method '" + method + "' (expected ns5-fast | ns3-accurate)");
  if (batch == 0) return;
  if (rows == 0 || cols == 0) {
    std::fill(out.begin(), out.begin() + batch, 0.0);
    return;
  }
  const size_t n = size_t(rows) * cols;
  std::vector<float> Q(W, W + size_t(batch) * n);
  if (method == "ns5-fast") newton_schulz_cpu(Q.data(), batch, rows, cols, ns_schedule_keller5(5), NsPrecision::fp32);
  else cubic_ns(Q.data(), batch, rows, cols, ns3_accurate_steps(rows, cols));
  for (int b = 0; b < batch; ++b) out[b] = polar_power(Q.data() + b * n, W + b * n, rows, cols, iters);
}

double sigma_max_polar(const float* W, int rows, int cols, const std::string& method, int iters) {
  double out = 0.0;
  sigma_max_polar_batched(W, 1, rows, cols, method, iters, std::span<double>(&out, 1));
  return out;
}

}  // namespace pg
