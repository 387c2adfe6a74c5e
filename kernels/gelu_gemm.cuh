// The MLP's two GEMMs that carry a GELU, with the GELU in our own epilogue (sm_90a: TMA loads,
// warpgroup MMA), in place of cuBLASLt's GELU_AUX_BIAS and DGELU epilogues, which run well below
// its plain GEMMs of the same shape (bench/RESULTS.md, kernels_bench mlp):
//   gemm_bias_gelu_aux   aux = A·Bᵀ + bias, out = gelu(aux)          A [M,K], B [N,K] (the fc weight)
//   gemm_dgelu           out = (alpha·A·B) ∘ gelu'(aux)              A [M,K], B [K,N] (the proj weight)
//                        and, with dbias, dbias[N] += Σ_rows out (the fc bias's gradient, summed
//                        from the fp32 values before rounding, deterministic)
// All matrices row-major bf16, fp32 accumulation, each output rounded once; GELU is the tanh
// approximation (activation.cuh) with the hardware's tanh (common.cuh's gelu_fast_f), applied to
// the fp32 pre-activation; gelu' reads the bf16 aux.
//
// The kernels (GeluGemmKernel below), on 128×128 output tiles with 64-deep k-blocks of A and B
// streamed by TMA into shared-memory stages (completion on an mbarrier per stage, release on
// another), m64n128k16 wgmma:
//   Tiled: a block a tile, two blocks an SM (so one's epilogue may run under the other's
//     products); a producer warp and two consumer warpgroups of 64 rows; three stages.
//   Pingpong (the default): persistent, one block an SM; a producer warpgroup and two consumer
//     warpgroups that take whole tiles alternately (128 accumulators a thread, setmaxnreg), the
//     main loops one after the other, each epilogue under the other warpgroup's main loop; four
//     stages. gemm_dgelu's aux comes by TMA into the consumer's staging panels during its main
//     loop, and the gradient replaces it there before the stores.
// Tiles run in row-panel order (the tiles of a panel of A side by side), so a panel is read
// from DRAM once. As measured on an H200 (bench/RESULTS.md) Pingpong matches cuBLASLt's
// GELU_AUX_BIAS (0.570 against 0.564 ms at GPT-2's B = 64) and trailed its DGELU (0.722 against
// 0.607) while it loaded aux from global memory in the epilogue; the tiled kernels are slower
// still. So CudaGpt uses these only when asked
// (CudaGpt::set_gelu_gemm).
#pragma once
#include <cstdint>
#include <initializer_list>

#include "kernels/types.cuh"

namespace pg::kernels {

// Whether these kernels take the shape: a Hopper GPU (sm_90), N % 128 == 0, K % 64 == 0, M >= 1,
// every pointer 16-byte aligned. Otherwise use cuBLASLt's epilogues.
bool gelu_gemm_supported(int M, int N, int K);
// Whether every (non-null) pointer is 16-byte aligned, as TMA needs.
bool gelu_gemm_aligned(std::initializer_list<const void*> ptrs);

// fp32 scratch gemm_dgelu needs for a bias gradient: one row of column sums per 128 rows of A.
inline int64_t gelu_gemm_scratch_floats(int M, int N) { return int64_t((M + 127) / 128) * N; }

// Which kernel: Pingpong (persistent, one block an SM, two consumer warpgroups on alternate whole
// tiles, one's epilogue under the other's products), or Tiled (a block a tile, two an SM, outputs
// through TMA stores) and TiledDirect (the same, each thread storing its pairs of columns), kept
// to measure one beside the others.
enum class GeluGemmKernel { Pingpong, Tiled, TiledDirect };

void gemm_bias_gelu_aux(bf16* out, bf16* aux, const bf16* A, const bf16* B, const bf16* bias, int M, int N, int K,
                        cudaStream_t stream, GeluGemmKernel kernel = GeluGemmKernel::Pingpong);

// dbias may be null (then scratch may be too).
void gemm_dgelu(bf16* out, float* dbias, float* scratch, const bf16* A, const bf16* B, const bf16* aux, float alpha,
                int M, int N, int K, cudaStream_t stream, GeluGemmKernel kernel = GeluGemmKernel::Pingpong);

}  // namespace pg::kernels
