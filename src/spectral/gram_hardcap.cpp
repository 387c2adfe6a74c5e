// Gram-matrix hard cap (see gram_hardcap.hpp).
#include "spectral/gram_hardcap.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "core/error.hpp"
#include "optim/dense.hpp"

namespace pg {

void sym_eigen(std::vector<double>& A, int n, std::vector<double>& values, std::vector<double>& vectors) {
  vectors.assign(size_t(n) * n, 0.0);
  for (int i = 0; i < n; ++i) vectors[size_t(i) * n + i] = 1.0;
  auto a = [&](int i, int j) -> double& { return A[size_t(i) * n + j]; };
  for (int sweep = 0; sweep < 60; ++sweep) {
    double off = 0.0, diag = 0.0;
    for (int i = 0; i < n; ++i) {
      diag += a(i, i) * a(i, i);
      for (int j = i + 1; j < n; ++j) off += a(i, j) * a(i, j);
    }
    if (off <= 1e-30 * diag || off == 0.0) break;
    for (int p = 0; p < n; ++p)
      for (int q = p + 1; q < n; ++q) {
        const double apq = a(p, q);
        if (apq == 0.0) continue;
        // Rotation zeroing a(p, q): tan t = sign(theta) / (|theta| + sqrt(theta^2 + 1)).
        const double theta = (a(q, q) - a(p, p)) / (2.0 * apq);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::abs(theta) + std::sqrt(theta * theta + 1.0));
        const double c = 1.0 / std::sqrt(t * t + 1.0), s = t * c;
        for (int k = 0; k < n; ++k) {  // A <- A J (columns p, q)
          const double akp = a(k, p), akq = a(k, q);
          a(k, p) = c * akp - s * akq;
          a(k, q) = s * akp + c * akq;
        }
        for (int k = 0; k < n; ++k) {  // A <- J^T A (rows p, q)
          const double apk = a(p, k), aqk = a(q, k);
          a(p, k) = c * apk - s * aqk;
          a(q, k) = s * apk + c * aqk;
        }
        for (int k = 0; k < n; ++k) {  // V <- V J
          double& vkp = vectors[size_t(k) * n + p];
          double& vkq = vectors[size_t(k) * n + q];
          const double x = vkp, y = vkq;
          vkp = c * x - s * y;
          vkq = s * x + c * y;
        }
      }
  }
  values.resize(size_t(n));
  for (int i = 0; i < n; ++i) values[size_t(i)] = a(i, i);
}

void spectral_hardcap_gram(float* W, int rows, int cols, double beta) {
  PG_CHECK(beta > 0.0 && rows > 0 && cols > 0, "spectral_hardcap_gram: needs beta > 0 and a non-empty W");
  const bool tall = rows >= cols;
  const int k = tall ? cols : rows;  // the Gram side
  const size_t n = size_t(rows) * cols;
  std::vector<double> Wd(W, W + n), G(size_t(k) * k);
  // G = W^T W (tall) or W W^T (wide), float64.
  dense::syrk(tall, k, tall ? rows : cols, 1.0, Wd.data(), cols, 0.0, G.data(), k);
  dense::mirror_upper(G.data(), k);
  std::vector<double> lambda, V;
  sym_eigen(G, k, lambda, V);
  if (std::all_of(lambda.begin(), lambda.end(), [&](double l) { return !(l > beta * beta); })) return;
  // M = V diag(f(lambda)) V^T - I  (only the capped directions), then W <- W + W M (tall) or M W.
  std::vector<double> M(size_t(k) * k, 0.0);
  for (int e = 0; e < k; ++e) {
    const double l = lambda[size_t(e)];
    if (!(l > beta * beta)) continue;
    const double d = beta / std::sqrt(l) - 1.0;
    for (int i = 0; i < k; ++i)
      for (int j = 0; j < k; ++j) M[size_t(i) * k + j] += d * V[size_t(i) * k + e] * V[size_t(j) * k + e];
  }
  std::vector<double> out(Wd);
  if (tall) dense::gemm(false, false, rows, cols, cols, 1.0, Wd.data(), cols, M.data(), k, 1.0, out.data(), cols);
  else dense::gemm(false, false, rows, cols, rows, 1.0, M.data(), k, Wd.data(), cols, 1.0, out.data(), cols);
  for (size_t i = 0; i < n; ++i) W[i] = float(out[i]);
}

}  // namespace pg
