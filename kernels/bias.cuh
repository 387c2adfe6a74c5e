// The bias gradient of a linear layer: dbias[OC] += Σ_n dout[n, :] over the N rows of
// dout[N, OC] (bf16), accumulated into fp32 dbias. Deterministic in two stages. First, a fixed
// grid of column slabs × row chunks (about kBiasBlocks blocks of 32×8 threads, one wave on an
// H100/H200, each block streaming its chunk of rows) writes each chunk's column sums to
// scratch[chunk][OC]; the 8 thread rows of a block add their rows in a fixed order and several
// rows' loads are in flight per thread (a plain loop leaves one, and runs at ~2.3 TB/s).
// When OC % 8 == 0 and dout is 16-byte aligned a thread reads 8 columns per 16-byte load
// (256-column slabs), otherwise one column (32-column slabs). Second, blocks of 32×8 threads
// add the chunks of 32 columns in chunk order and add the total into dbias.
// scratch: bias_bwd_scratch_floats(OC) fp32.
#pragma once
#include "kernels/types.cuh"

namespace pg::kernels {

constexpr int kBiasBlocks = 1056;  // 8 per SM of an H100/H200 (the 16-byte kernel keeps to 32 registers for it)
// Row chunks of the first stage for slabs of `slab` columns: as many as fill kBiasBlocks.
inline int bias_bwd_chunks(int OC, int slab) {
  const int n_slab = (OC + slab - 1) / slab;
  return n_slab >= kBiasBlocks ? 1 : kBiasBlocks / n_slab;
}
inline int64_t bias_bwd_scratch_floats(int OC) { return int64_t(bias_bwd_chunks(OC, 256)) * OC; }

void bias_bwd(float* dbias, float* scratch, const bf16* dout, int N, int OC, cudaStream_t stream);

// dbias[OC] += Σ_i partial[i][OC] over n_partial rows (in a fixed order): folds a bias gradient
// computed elsewhere (a GEMM epilogue, which writes its sums) into the accumulated one.
void bias_accumulate(float* dbias, const float* partial, int OC, cudaStream_t stream, int n_partial = 1);

}  // namespace pg::kernels
