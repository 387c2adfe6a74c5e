// Single-threaded row-major GEMM through CBLAS, overloaded for float and double:
// C[M,N] = alpha·op(A)·op(B) + beta·C. The CPU ops call it from inside parallel_for bodies, each on
// a block whose shape never depends on the thread count, so results do not either.
#pragma once
#include <cblas.h>

namespace pg::cpu {

inline void gemm1(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
                  const float* B, int ldb, float beta, float* C, int ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N,
              K, alpha, A, lda, B, ldb, beta, C, ldc);
}
inline void gemm1(bool ta, bool tb, int M, int N, int K, double alpha, const double* A, int lda,
                  const double* B, int ldb, double beta, double* C, int ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N,
              K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// OpenBLAS must not start threads of its own: all parallelism runs on our pool (parallel.hpp).
void ensure_single_threaded_blas();

}  // namespace pg::cpu
