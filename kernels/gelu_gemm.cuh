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
// The kernel: 128×128 output tiles, 64-deep k-blocks of A and B streamed by TMA into five
// shared-memory stages (completion on an mbarrier per stage, release on another), m64n128k16
// wgmma. Persistent, one block an SM: a producer warpgroup and two consumer warpgroups that take
// whole tiles alternately (128 accumulators a thread, setmaxnreg), the main loops one after the
// other, each epilogue under the other warpgroup's main loop ("pingpong"). The epilogue stages its
// outputs in shared memory for TMA stores; gemm_dgelu's aux comes by TMA into those staging panels
// during the main loop, and the gradient replaces it there before the stores.
// Tiles run in row-panel order (the tiles of a panel of A side by side), so a panel is read
// from DRAM once. Measured on an H200 (bench/RESULTS.md, kernels_bench mlp, GPT-2's B = 64, each
// pair from one call): with five stages the forward 0.516 ms against cuBLASLt's GELU_AUX_BIAS
// 0.561–0.587 (tuned 0.535–0.551); the GELU gradient with the bias sums 0.599–0.606 against
// cuBLASLt's DGELU then bias_bwd 0.809–0.835; the GPT-2 step 1.5–2% faster with both than with
// cuBLASLt's epilogues. CudaGpt uses them by default (CudaGpt::set_gelu_gemm). Four stages gave a
// forward 0.555–0.579: the ring's depth, not only L2's bandwidth, bounds the main loop. Clusters of
// two CTAs sharing A's loads by TMA multicast (GeluGemmKernel::Pair) are slower: 0.608 ms for the
// forward with five stages (H200; all 66 clusters run at once; presumably the two CTAs' coupled
// rings, each stage refilled only once both have read it), equal to Solo in the step. Tiles of
// 256 rows shared by the two consumers at once ("cooperative", three stages of 48 KB) were slower
// still, 0.692 against 0.579 with four, and were not kept.
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

// fp32 scratch gemm_dgelu needs for a bias gradient: a row of column sums per warp of a 128-row
// tile (kPartRows of them), summed by bias_accumulate.
constexpr int kPartRows = 4;
inline int64_t gelu_gemm_scratch_floats(int M, int N) { return int64_t((M + 127) / 128) * kPartRows * N; }

// Which kernel: Solo (each CTA its own tiles; the default), Pair (clusters of two CTAs on tiles
// side by side, sharing A's loads by TMA multicast, where N is a multiple of 256, else Solo), kept
// to measure beside Solo (slower alone, equal in the GPT-2 step: bench/RESULTS.md).
enum class GeluGemmKernel { Solo, Pair };
// The clusters of two that run at once, which bound Pair's grid (cudaOccupancyMaxActiveClusters; of
// the forward's kernel, or with dgelu the gradient's), for benchmarks to report.
int gelu_gemm_pair_clusters(bool dgelu);

void gemm_bias_gelu_aux(bf16* out, bf16* aux, const bf16* A, const bf16* B, const bf16* bias, int M, int N, int K,
                        cudaStream_t stream, GeluGemmKernel kernel = GeluGemmKernel::Solo);

// dbias may be null (then scratch may be too).
void gemm_dgelu(bf16* out, float* dbias, float* scratch, const bf16* A, const bf16* B, const bf16* aux, float alpha,
                int M, int N, int K, cudaStream_t stream, GeluGemmKernel kernel = GeluGemmKernel::Solo);

}  // namespace pg::kernels
