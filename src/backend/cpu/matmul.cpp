// Linear layer: out[N,OC] = inp[N,IC] · w[OC,IC]^T + bias[OC], and its backward. The GEMMs go
// to single-threaded OpenBLAS calls, one per contiguous block of output rows, run on our own
// thread pool: one pool for every op, so OpenBLAS's threads never spin against ours (that
// contention cost ~18% of a CPU training step). Splitting never touches the reduction, so
// results do not depend on the thread count. The bias gradient is a column sum split over columns.
#include <algorithm>
#include <vector>

#include "backend/cpu/ops.hpp"
#include "backend/cpu/blas.hpp"
#include "backend/cpu/parallel.hpp"
#include "core/error.hpp"

namespace pg::cpu {
namespace {

// The same, with the rows of C cut into blocks spread over the pool. The block height depends
// on M alone (at least 64 rows, at most 32 blocks, so tall products like the LM head's weight
// gradient do not repack the other operand per 64 rows), never on the thread count, so neither
// do the results.
template <typename T>
void gemm(bool ta, bool tb, int M, int Nc, int K, T alpha, const T* A, int lda, const T* B, int ldb,
          T beta, T* C, int ldc) {
  ensure_single_threaded_blas();
  const int64_t rows = std::max<int64_t>(64, (int64_t(M) + 31) / 32);
  const int64_t blocks = (M + rows - 1) / rows;
  const int64_t work_per_block = rows * Nc * K;
  parallel_for(
      blocks,
      [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t m0 = b * rows, m1 = std::min<int64_t>(M, m0 + rows);
          const T* a = ta ? A + m0 : A + m0 * lda;
          dense::gemm(ta, tb, int(m1 - m0), Nc, K, alpha, a, lda, B, ldb, beta, C + m0 * ldc, ldc);
        }
      },
      work_per_block >= (int64_t(1) << 18) ? 1 : 4);
}

}  // namespace

void ensure_single_threaded_blas() {
  static const bool once = (openblas_set_num_threads(1), true);
  (void)once;
}

template <typename T>
void matmul_fwd(T* out, const T* inp, const T* w, Nullable<const T> bias, int N, int IC, int OC) {
  PG_CHECK(N >= 0 && IC >= 0 && OC >= 0, "matmul_fwd: negative shape");
  if (N == 0 || OC == 0) return;
  // With a bias, seed every output row with it and let the GEMM add onto it (beta = 1).
  if (bias) {
    parallel_for(
        N,
        [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) std::copy(bias, bias + OC, out + r * OC);
        },
        rows_per_chunk(OC));
  }
  if (IC == 0) {
    if (!bias) std::fill(out, out + int64_t(N) * OC, T(0));
    return;
  }
  gemm(false, true, N, OC, IC, T(1), inp, IC, w, IC, bias ? T(1) : T(0), out, OC);
}

template <typename T>
void matmul_bwd(Nullable<T> dinp, Nullable<T> dw, Nullable<T> dbias, const T* dout, const T* inp,
                const T* w, int N, int IC, int OC) {
  PG_CHECK(N >= 0 && IC >= 0 && OC >= 0, "matmul_bwd: negative shape");
  if (N == 0 || OC == 0) return;
  if (IC > 0) {
    if (dinp) gemm(false, false, N, IC, OC, T(1), dout, OC, w, IC, T(1), dinp, IC);
    if (dw) gemm(true, false, OC, IC, N, T(1), dout, OC, inp, IC, T(1), dw, IC);
  }
  if (dbias) {
    // Each chunk owns a range of columns and sums them over all rows, in row order.
    parallel_for(
        OC,
        [&](int64_t c0, int64_t c1) {
          std::vector<double> acc(size_t(c1 - c0), 0.0);
          for (int64_t r = 0; r < N; ++r) {
            const T* row = dout + r * OC;
            for (int64_t c = c0; c < c1; ++c) acc[size_t(c - c0)] += double(row[c]);
          }
          for (int64_t c = c0; c < c1; ++c) dbias[c] += T(acc[size_t(c - c0)]);
        },
        rows_per_chunk(N));
  }
}

template void matmul_fwd<float>(float*, const float*, const float*, const float*, int, int, int);
template void matmul_fwd<double>(double*, const double*, const double*, const double*, int, int,
                                 int);
template void matmul_bwd<float>(float*, float*, float*, const float*, const float*, const float*,
                                int, int, int);
template void matmul_bwd<double>(double*, double*, double*, const double*, const double*,
                                 const double*, int, int, int);

}  // namespace pg::cpu
