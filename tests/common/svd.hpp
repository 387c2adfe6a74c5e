// Test-only float64 linear algebra: a one-sided (Hestenes) Jacobi SVD, Haar-random orthogonal
// matrices (Householder QR of a Gaussian matrix) and matrices with prescribed singular values.
// Jacobi rotates pairs of columns until all are mutually orthogonal; the column norms are then
// the singular values to high relative accuracy (~1e-13 here for sides up to 256).
// Row-major storage throughout. Test: tests/common/test_svd.cpp.
#pragma once
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/rng.hpp"

namespace pg::testing {

struct Svd {
  int rows = 0, cols = 0, k = 0;  // k = min(rows, cols)
  std::vector<double> s;          // k singular values, descending
  std::vector<double> U;          // rows x k (only when vectors were asked for)
  std::vector<double> V;          // cols x k
};

// W = U diag(s) V^T.
inline Svd jacobi_svd(const double* W, int rows, int cols, bool vectors = false) {
  // Work on a tall view G (mm x nn, mm >= nn) stored by columns: G = W, or W^T when W is wide.
  const bool wide = rows < cols;
  const int mm = wide ? cols : rows, nn = wide ? rows : cols;
  std::vector<double> G(size_t(mm) * nn), Vw(size_t(nn) * nn, 0.0);  // column j at j*mm / j*nn
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) {
      const double w = W[size_t(i) * cols + j];
      if (!wide) G[size_t(j) * mm + i] = w;
      else G[size_t(i) * mm + j] = w;
    }
  for (int j = 0; j < nn; ++j) Vw[size_t(j) * nn + j] = 1.0;

  for (int sweep = 0; sweep < 60; ++sweep) {
    bool rotated = false;
    for (int p = 0; p < nn - 1; ++p)
      for (int q = p + 1; q < nn; ++q) {
        double* gp = &G[size_t(p) * mm];
        double* gq = &G[size_t(q) * mm];
        double alpha = 0, beta = 0, gamma = 0;
        for (int i = 0; i < mm; ++i) {
          alpha += gp[i] * gp[i];
          beta += gq[i] * gq[i];
          gamma += gp[i] * gq[i];
        }
        if (std::fabs(gamma) <= 1e-15 * std::sqrt(alpha * beta) || gamma == 0.0) continue;
        rotated = true;
        // The rotation that zeroes the (p, q) entry of G^T G.
        const double zeta = (beta - alpha) / (2.0 * gamma);
        const double t = std::copysign(1.0, zeta) / (std::fabs(zeta) + std::sqrt(1.0 + zeta * zeta));
        const double c = 1.0 / std::sqrt(1.0 + t * t), sn = c * t;
        for (int i = 0; i < mm; ++i) {
          const double a = gp[i], b = gq[i];
          gp[i] = c * a - sn * b;
          gq[i] = sn * a + c * b;
        }
        double* vp = &Vw[size_t(p) * nn];
        double* vq = &Vw[size_t(q) * nn];
        for (int i = 0; i < nn; ++i) {
          const double a = vp[i], b = vq[i];
          vp[i] = c * a - sn * b;
          vq[i] = sn * a + c * b;
        }
      }
    if (!rotated) break;
  }

  Svd out;
  out.rows = rows, out.cols = cols, out.k = nn;
  std::vector<double> norms(nn);
  for (int j = 0; j < nn; ++j) {
    double s = 0;
    for (int i = 0; i < mm; ++i) s += G[size_t(j) * mm + i] * G[size_t(j) * mm + i];
    norms[j] = std::sqrt(s);
  }
  std::vector<int> order(nn);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return norms[a] > norms[b]; });
  for (int j : order) out.s.push_back(norms[j]);
  if (vectors) {
    // Tall view: G = Ut diag(s) Vw^T with Ut = G / s. For a wide W the roles swap.
    std::vector<double> Ut(size_t(mm) * nn), Vt(size_t(nn) * nn);
    for (int jj = 0; jj < nn; ++jj) {
      const int j = order[jj];
      const double inv = norms[j] > 0 ? 1.0 / norms[j] : 0.0;
      for (int i = 0; i < mm; ++i) Ut[size_t(i) * nn + jj] = G[size_t(j) * mm + i] * inv;
      for (int i = 0; i < nn; ++i) Vt[size_t(i) * nn + jj] = Vw[size_t(j) * nn + i];
    }
    out.U = wide ? Vt : Ut;
    out.V = wide ? Ut : Vt;
  }
  return out;
}

inline std::vector<double> singular_values(const double* W, int rows, int cols) {
  return jacobi_svd(W, rows, cols).s;
}
inline std::vector<double> singular_values(const float* W, int rows, int cols) {
  std::vector<double> d(W, W + size_t(rows) * cols);
  return jacobi_svd(d.data(), rows, cols).s;
}

// Haar-random n x n orthogonal matrix: Q of the QR of a Gaussian matrix, signs fixed so that
// diag(R) > 0.
inline std::vector<double> random_orthogonal(int n, Rng& rng) {
  std::vector<double> A(size_t(n) * n);
  for (auto& a : A) a = rng.normal();
  std::vector<double> Q(size_t(n) * n, 0.0);
  for (int i = 0; i < n; ++i) Q[size_t(i) * n + i] = 1.0;
  std::vector<double> v(n);
  std::vector<double> sign(n, 1.0);
  for (int k = 0; k < n; ++k) {
    // Householder vector for column k below the diagonal: H = I - 2 v v^T / (v^T v).
    double norm = 0;
    for (int i = k; i < n; ++i) norm += A[size_t(i) * n + k] * A[size_t(i) * n + k];
    norm = std::sqrt(norm);
    const double x0 = A[size_t(k) * n + k];
    const double alpha = x0 >= 0 ? -norm : norm;  // R_kk = alpha
    sign[k] = alpha >= 0 ? 1.0 : -1.0;
    double vv = 0;
    for (int i = 0; i < n; ++i) v[i] = i < k ? 0.0 : A[size_t(i) * n + k];
    v[k] -= alpha;
    for (int i = k; i < n; ++i) vv += v[i] * v[i];
    if (vv == 0.0) continue;
    for (int j = k; j < n; ++j) {  // A <- H A
      double d = 0;
      for (int i = k; i < n; ++i) d += v[i] * A[size_t(i) * n + j];
      d *= 2.0 / vv;
      for (int i = k; i < n; ++i) A[size_t(i) * n + j] -= d * v[i];
    }
    for (int i = 0; i < n; ++i) {  // Q <- Q H
      double d = 0;
      for (int j = k; j < n; ++j) d += Q[size_t(i) * n + j] * v[j];
      d *= 2.0 / vv;
      for (int j = k; j < n; ++j) Q[size_t(i) * n + j] -= d * v[j];
    }
  }
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) Q[size_t(i) * n + j] *= sign[j];
  return Q;
}

// rows x cols matrix U diag(s) V^T with Haar-random U, V; s has min(rows, cols) entries (any order).
struct Constructed {
  std::vector<double> W, U, V;  // W rows x cols; U rows x rows; V cols x cols (first k columns used)
};
inline Constructed with_singular_values(int rows, int cols, const std::vector<double>& s, Rng& rng) {
  const int k = std::min(rows, cols);
  Constructed c;
  c.U = random_orthogonal(rows, rng);
  c.V = random_orthogonal(cols, rng);
  c.W.assign(size_t(rows) * cols, 0.0);
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) {
      double acc = 0;
      for (int t = 0; t < k; ++t) acc += c.U[size_t(i) * rows + t] * s[t] * c.V[size_t(j) * cols + t];
      c.W[size_t(i) * cols + j] = acc;
    }
  return c;
}

// Log-spaced values from hi down to hi / cond (k of them), the spectrum most tests use.
inline std::vector<double> log_spaced(int k, double hi, double cond) {
  std::vector<double> s(k);
  for (int i = 0; i < k; ++i) s[i] = k == 1 ? hi : hi * std::pow(cond, -double(i) / (k - 1));
  return s;
}

inline std::vector<float> to_float(const std::vector<double>& x) { return {x.begin(), x.end()}; }

}  // namespace pg::testing
