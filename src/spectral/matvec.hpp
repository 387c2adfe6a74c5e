// Matrix-vector products over a float32 row-major matrix with float64 vectors and accumulation,
// for power iterations whose sums must not lose the small components.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "core/rng.hpp"

namespace pg {

// y[rows] = W x[cols]
inline void matvec(const float* W, int rows, int cols, const double* x, double* y) {
  for (int i = 0; i < rows; ++i) {
    const float* w = W + size_t(i) * cols;
    double s = 0.0;
    for (int j = 0; j < cols; ++j) s += double(w[j]) * x[j];
    y[i] = s;
  }
}

// y[cols] = W^T x[rows], walking W by rows.
inline void matvec_t(const float* W, int rows, int cols, const double* x, double* y) {
  for (int j = 0; j < cols; ++j) y[j] = 0.0;
  for (int i = 0; i < rows; ++i) {
    const float* w = W + size_t(i) * cols;
    const double xi = x[i];
    for (int j = 0; j < cols; ++j) y[j] += double(w[j]) * xi;
  }
}

inline double norm2(const double* x, int n) {
  double s = 0.0;
  for (int i = 0; i < n; ++i) s += x[i] * x[i];
  return std::sqrt(s);
}

// x /= ||x|| unless x = 0; returns the old norm.
inline double normalize_in_place(double* x, int n) {
  const double nrm = norm2(x, n);
  if (nrm > 0.0)
    for (int i = 0; i < n; ++i) x[i] /= nrm;
  return nrm;
}

// A fixed-seed Gaussian direction: reproducible starts for the power iterations.
inline void random_unit_vector(double* x, int n, uint64_t seed) {
  Rng rng(seed);
  for (int i = 0; i < n; ++i) x[i] = rng.normal();
  normalize_in_place(x, n);
}

}  // namespace pg
