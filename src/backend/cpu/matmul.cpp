// Linear layer: out[N,OC] = inp[N,IC] · w[OC,IC]^T + bias[OC], and its backward. The GEMMs go
// to single-threaded OpenBLAS calls, one per contiguous block of output rows or columns, run on our own
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

// The same, with C cut into blocks spread over the pool. OpenBLAS packs both operands of every
// call, so each block repacks the whole operand it shares with the other blocks: C is cut along
// its longer side, which makes that shared operand the smaller one (for the LM head's forward,
// 2048 x 50257 from 2048 x 128 times 128 x 50257, cutting the 50257 columns repacks only the
// 2048 x 128 input per block, not the 25.7 MB weight). Blocks are at least 64 wide and at most 32;
// when the shared operand is large (over 2^20 elements: the head's 50257 x 128 weight in its
// input gradient), at most 4, so it is repacked at most 4 times (bench/RESULTS.md, the head GEMMs).
// The block size depends on the shapes alone, never on the thread count, so neither do the
// results; splitting never touches the reduction.
template <typename T>
void gemm(bool ta, bool tb, int M, int Nc, int K, T alpha, const T* A, int lda, const T* B, int ldb,
          T beta, T* C, int ldc) {
  ensure_single_threaded_blas();
  const bool by_cols = Nc > M;
  const int64_t len = by_cols ? Nc : M;                        // the side that is cut
  const int64_t shared = int64_t(K) * (by_cols ? M : Nc);      // elements repacked per block
  const int64_t max_blocks = shared > (int64_t(1) << 20) ? 4 : 32;
  const int64_t step = std::max<int64_t>(64, (len + max_blocks - 1) / max_blocks);
  const int64_t blocks = (len + step - 1) / step;
  const int64_t work_per_block = step * (by_cols ? M : Nc) * int64_t(K);
  parallel_for(
      blocks,
      [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t i0 = b * step, i1 = std::min<int64_t>(len, i0 + step);
          if (by_cols) {  // columns i0..i1 of C: columns of op(B)
            const T* bb = tb ? B + i0 * ldb : B + i0;
            dense::gemm(ta, tb, M, int(i1 - i0), K, alpha, A, lda, bb, ldb, beta, C + i0, ldc);
          } else {  // rows i0..i1 of C: rows of op(A)
            const T* a = ta ? A + i0 : A + i0 * lda;
            dense::gemm(ta, tb, int(i1 - i0), Nc, K, alpha, a, lda, B, ldb, beta, C + i0 * ldc, ldc);
          }
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
