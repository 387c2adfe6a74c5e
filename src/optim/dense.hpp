// Small dense-matrix helpers shared by Newton-Schulz and the spectral ops on the CPU: typed
// wrappers over OpenBLAS (float and double overloads, so one templated body serves both) and
// the transposes used to orient a matrix wide. All matrices are row-major and contiguous.
#pragma once
#include <cblas.h>

#include <cmath>
#include <cstddef>

namespace pg::dense {

// C (m x n) = alpha * op(A) * op(B) + beta * C; op = transpose when the flag is set.
inline void gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
              k, alpha, A, lda, B, ldb, beta, C, ldc);
}
inline void gemm(bool ta, bool tb, int m, int n, int k, double alpha, const double* A, int lda,
                 const double* B, int ldb, double beta, double* C, int ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
              k, alpha, A, lda, B, ldb, beta, C, ldc);
}

// Upper triangle of C (n x n) = alpha * A A^T + beta * C for A n x k (trans = false), or
// alpha * A^T A + beta * C for A k x n (trans = true). Call mirror_upper() to fill the lower half.
inline void syrk(bool trans, int n, int k, float alpha, const float* A, int lda, float beta, float* C,
                 int ldc) {
  cblas_ssyrk(CblasRowMajor, CblasUpper, trans ? CblasTrans : CblasNoTrans, n, k, alpha, A, lda, beta,
              C, ldc);
}
inline void syrk(bool trans, int n, int k, double alpha, const double* A, int lda, double beta,
                 double* C, int ldc) {
  cblas_dsyrk(CblasRowMajor, CblasUpper, trans ? CblasTrans : CblasNoTrans, n, k, alpha, A, lda, beta,
              C, ldc);
}

template <class T>
void mirror_upper(T* C, int n) {
  for (int i = 1; i < n; ++i)
    for (int j = 0; j < i; ++j) C[size_t(i) * n + j] = C[size_t(j) * n + i];
}

// dst (cols x rows) = src^T for src rows x cols.
template <class T>
void transpose(const T* src, int rows, int cols, T* dst) {
  constexpr int kTile = 32;  // tiled so both sides stay in cache
  for (int i0 = 0; i0 < rows; i0 += kTile)
    for (int j0 = 0; j0 < cols; j0 += kTile)
      for (int i = i0; i < rows && i < i0 + kTile; ++i)
        for (int j = j0; j < cols && j < j0 + kTile; ++j) dst[size_t(j) * rows + i] = src[size_t(i) * cols + j];
}

template <class T>
double frobenius_norm(const T* X, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; ++i) s += double(X[i]) * double(X[i]);
  return std::sqrt(s);
}

}  // namespace pg::dense
