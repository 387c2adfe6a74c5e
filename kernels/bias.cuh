// The bias gradient of a linear layer: dbias[OC] += Σ_n dout[n, :] over the N rows of
// dout[N, OC] (bf16), accumulated into fp32 dbias. Deterministic in two stages: a fixed grid of
// kBiasRowChunks × ceil(OC/32) blocks of 32×8 threads, each block summing 32 columns over its
// chunk of rows (the 8 thread rows in a fixed order) into scratch[chunk][OC]; then one thread
// per column adds the chunks in order.
// scratch: bias_bwd_scratch_floats(OC) fp32.
#pragma once
#include "kernels/types.cuh"

namespace pg::kernels {

constexpr int kBiasRowChunks = 64;
inline int64_t bias_bwd_scratch_floats(int OC) { return int64_t(kBiasRowChunks) * OC; }

void bias_bwd(float* dbias, float* scratch, const bf16* dout, int N, int OC, cudaStream_t stream);

}  // namespace pg::kernels
