// Spectral projections: normalize, hammer, soft cap (+ its coupling), hard cap. Math and
// derivations in projection.hpp.
#include "spectral/projection.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "core/error.hpp"
#include "optim/dense.hpp"
#include "optim/newton_schulz.hpp"

namespace pg {
namespace {

constexpr double kPeakRatio = 62.0 / 81.0;  // phi(1/3): f at the peak of p1, over the peak input

double phi(double t) { return 1.0 - 3 * t * t + 3 * t * t * t - t * t * t * t; }

// Smallest t >= 0 with phi(t) = r, for r in [62/81, 1): phi decreases on [0, 1/3].
double phi_root(double r) {
  double lo = 0.0, hi = 1.0 / 3.0;
  for (int it = 0; it < 200 && hi - lo > 0.0; ++it) {
    const double mid = 0.5 * (lo + hi);
    if (mid == lo || mid == hi) break;
    (phi(mid) > r ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

}  // namespace

void spectral_normalize(float* W, int rows, int cols, double sigma_hat, double w_max) {
  if (!(sigma_hat > w_max)) return;
  const float scale = float(w_max / sigma_hat);
  const size_t n = size_t(rows) * cols;
  for (size_t i = 0; i < n; ++i) W[i] *= scale;
}

void spectral_hammer(float* W, int rows, int cols, const float* u, const float* v, double sigma_hat,
                     double w_max) {
  if (!(sigma_hat > w_max)) return;
  const double d = w_max - sigma_hat;
  for (int i = 0; i < rows; ++i) {
    const double du = d * u[i];
    float* w = W + size_t(i) * cols;
    for (int j = 0; j < cols; ++j) w[j] = float(w[j] + du * v[j]);
  }
}

double softcap_alpha(double k, double w_max) {
  PG_CHECK(w_max > 0.0 && std::isfinite(k), "softcap_alpha: needs w_max > 0 and a finite k");
  if (k <= w_max) return 0.0;
  const double r = w_max / k;
  if (r >= kPeakRatio) return phi_root(r) / (k * k);
  return kPeakRatio * kPeakRatio / (3.0 * w_max * w_max);
}

double softcap_max_k(double w_max) {
  // With a = a_peak the peak is s_p = (81/62) w_max; at 2 s_p, t = 4/3 and phi(4/3) = -31/81, so
  // f(2 s_p) = -(62/81) s_p = -w_max: the negative branch reaches w_max at 2 s_p = (81/31) w_max.
  return 81.0 / 31.0 * w_max;
}

double softcap_bound_k(double w_max, double lr, double weight_decay, double update_spectral_bound) {
  return w_max * (1.0 - lr * weight_decay) + 1.05 * update_spectral_bound;
}

void spectral_softcap(float* W, int batch, int rows, int cols, double alpha) {
  if (alpha == 0.0 || batch == 0 || rows == 0 || cols == 0) return;
  // Wide: G = M M^T (rows x rows), M <- M + s G M.  Tall: G = M^T M (cols x cols), M <- M + s M G.
  const bool wide = rows <= cols;
  const int g = wide ? rows : cols;
  const size_t n = size_t(rows) * cols;
  std::vector<float> G(size_t(g) * g), Y(n);
  for (int b = 0; b < batch; ++b) {
    float* M = W + size_t(b) * n;
    for (double s : {-alpha, alpha}) {
      dense::syrk(!wide, g, wide ? cols : rows, 1.0f, M, cols, 0.0f, G.data(), g);
      dense::mirror_upper(G.data(), g);
      std::copy(M, M + n, Y.data());
      if (wide) dense::gemm(false, false, rows, cols, rows, float(s), G.data(), g, M, cols, 1.0f, Y.data(), cols);
      else dense::gemm(false, false, rows, cols, cols, float(s), M, cols, G.data(), g, 1.0f, Y.data(), cols);
      std::copy(Y.begin(), Y.end(), M);
    }
  }
}

namespace {

void msign(float* X, int batch, int rows, int cols, const std::vector<NsCoeffs>& s) {
  newton_schulz_cpu(X, batch, rows, cols, s, NsPrecision::fp32);
}
void msign(double* X, int batch, int rows, int cols, const std::vector<NsCoeffs>& s) {
  newton_schulz_cpu(X, batch, rows, cols, s);
}

template <class T>
void hardcap(T* W, int batch, int rows, int cols, double beta, int ns_steps) {
  PG_CHECK(beta > 0.0 && ns_steps >= 1, "spectral_hardcap: needs beta > 0 and ns_steps >= 1");
  if (batch == 0 || rows == 0 || cols == 0) return;
  const auto sched = ns_schedule_polar_express(ns_steps, kHardcapEll, 1.02, 0.02);
  const bool wide = rows <= cols;
  const int k = wide ? rows : cols;
  const size_t n = size_t(rows) * cols, kk = size_t(k) * k;

  std::vector<T> O(W, W + size_t(batch) * n);
  msign(O.data(), batch, rows, cols, sched);

  // C = beta I - sym(O W^T) (wide) or beta I - sym(O^T W) (tall), then S = msign(C).
  std::vector<T> C(size_t(batch) * kk);
  for (int b = 0; b < batch; ++b) {
    const T* Ob = O.data() + b * n;
    const T* Wb = W + b * n;
    T* Cb = C.data() + b * kk;
    if (wide) dense::gemm(false, true, k, k, cols, T(1), Ob, cols, Wb, cols, T(0), Cb, k);
    else dense::gemm(true, false, k, k, rows, T(1), Ob, cols, Wb, cols, T(0), Cb, k);
    for (int i = 0; i < k; ++i)
      for (int j = i; j < k; ++j) {
        const T sym = T(-0.5) * (Cb[i * k + j] + Cb[j * k + i]);
        Cb[i * k + j] = Cb[j * k + i] = sym;
      }
    for (int i = 0; i < k; ++i) Cb[i * k + i] += T(beta);
  }
  msign(C.data(), batch, k, k, sched);

  // D = beta O - W; W <- 1/2 (beta O + W - S D) = W + 1/2 (D - S D)   (tall: D S).
  std::vector<T> SD(n);
  for (int b = 0; b < batch; ++b) {
    T* D = O.data() + b * n;
    T* Wb = W + b * n;
    const T* S = C.data() + b * kk;
    for (size_t i = 0; i < n; ++i) D[i] = T(beta) * D[i] - Wb[i];
    if (wide) dense::gemm(false, false, rows, cols, rows, T(1), S, k, D, cols, T(0), SD.data(), cols);
    else dense::gemm(false, false, rows, cols, cols, T(1), D, cols, S, k, T(0), SD.data(), cols);
    for (size_t i = 0; i < n; ++i) Wb[i] += T(0.5) * (D[i] - SD[i]);
  }
}

}  // namespace

void spectral_hardcap(float* W, int batch, int rows, int cols, double beta, int ns_steps) {
  hardcap(W, batch, rows, cols, beta, ns_steps);
}
void spectral_hardcap(double* W, int batch, int rows, int cols, double beta, int ns_steps) {
  hardcap(W, batch, rows, cols, beta, ns_steps);
}

}  // namespace pg
