// The bias gradient of a linear layer: dbias[OC] += Σ_n dout[n, :] over the N rows of
// dout[N, OC] (bf16), accumulated into fp32 dbias. Deterministic in two stages: a fixed grid of
// kBiasRowChunks × ceil(OC/32) blocks of 32×8 threads, each block summing 32 columns over its
// chunk of rows (the 8 thread rows in a fixed order) into scratch[chunk][OC]; then one thread
// per column adds the chunks in order. When OC % 8 == 0 and dout is 16-byte aligned the first
// stage reads 8 columns per thread with 16-byte loads (256-column blocks), same summation order
// per column.
// scratch: bias_bwd_scratch_floats(OC) fp32.
#pragma once
#include "kernels/types.cuh"

namespace pg::kernels {

constexpr int kBiasRowChunks = 128;  // enough blocks to fill 132 SMs at OC = 768
inline int64_t bias_bwd_scratch_floats(int OC) { return int64_t(kBiasRowChunks) * OC; }

void bias_bwd(float* dbias, float* scratch, const bf16* dout, int N, int OC, cudaStream_t stream);

// dbias[OC] += partial[OC]: folds a bias gradient computed elsewhere (a GEMM epilogue, which
// writes) into the accumulated one.
void bias_accumulate(float* dbias, const float* partial, int OC, cudaStream_t stream);

}  // namespace pg::kernels
