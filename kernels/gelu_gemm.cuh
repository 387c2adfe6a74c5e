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
// The kernel: 128×128 output tiles, one per block, two blocks an SM (so one's epilogue runs under
// the other's MMAs); a producer warp streams 64-deep k-blocks of A and B through three stages of
// shared memory with TMA (completion on an mbarrier per stage, release on another), two consumer
// warpgroups take 64 rows each with m64n128k16 wgmma and run the epilogue from their registers.
// Blocks walk the tiles of a row panel of A side by side, so the panel is read from DRAM once.
#pragma once
#include <cstdint>

#include "kernels/types.cuh"

namespace pg::kernels {

// Whether these kernels take the shape: a Hopper GPU (sm_90), N % 128 == 0, K % 64 == 0, M >= 1,
// every pointer 16-byte aligned. Otherwise use cuBLASLt's epilogues.
bool gelu_gemm_supported(int M, int N, int K);

// fp32 scratch gemm_dgelu needs for a bias gradient: one row of column sums per 128 rows of A.
inline int64_t gelu_gemm_scratch_floats(int M, int N) { return int64_t((M + 127) / 128) * N; }

// How the epilogue writes: through shared memory and TMA stores (Tma), or from each thread's
// registers (Direct), kept to measure one beside the other.
enum class GeluGemmStore { Tma, Direct };

void gemm_bias_gelu_aux(bf16* out, bf16* aux, const bf16* A, const bf16* B, const bf16* bias, int M, int N, int K,
                        cudaStream_t stream, GeluGemmStore store = GeluGemmStore::Tma);

// dbias may be null (then scratch may be too).
void gemm_dgelu(bf16* out, float* dbias, float* scratch, const bf16* A, const bf16* B, const bf16* aux, float alpha,
                int M, int N, int K, cudaStream_t stream, GeluGemmStore store = GeluGemmStore::Tma);

}  // namespace pg::kernels
