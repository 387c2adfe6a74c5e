// The Mixture-of-Experts kernels: routing (softmax, top-k, renormalised gates) and its backward
// with both router losses, the dispatch plan built on the device, gather / scatter of token rows,
// the gated combine and its backward, and the per-expert bias add / bias gradient of the padded
// expert blocks. The math is the CPU reference's (backend/cpu/moe_ops.hpp); what differs is the
// row layout of the expert blocks and the precision.
//
// Layouts: N tokens, E experts, k = top_k, C = d_model; token n's j-th choice is assignment
// i = n·k + j. logits, probs, dlogits [N,E] fp32 (dlogits also bf16 for the router's GEMM);
// lse [N] fp32; sel [N,k] int32; gates, dgates [N,k] fp32.
//
// Padded expert blocks: every expert owns `cap` consecutive rows, so expert e's rows are
// [e·cap, (e+1)·cap) of an [E·cap, ·] tensor and the expert matmuls are one strided-batched GEMM
// over e (stride cap·width). An expert keeps min(counts[e], cap) assignments in rows
// e·cap + 0, 1, ... in the CPU's priority order (all first choices by token order, then all
// second choices, ...); the rows past that are padding. row_src[E·cap] holds the assignment i of
// each row, -1 for padding; slot[N,k] holds the row of each assignment, -1 when dropped. (The CPU
// packs the kept rows instead: its row begin[e] + p is row e·cap + p here.) cap is the capacity
// for this N, chosen by the caller (model/cuda_moe.hpp: ceil(capacity_factor·N·k/E), at most N;
// dropless = N, which always fits because a token's k experts are distinct).
//
// Precision and determinism: routing math in fp32 with the sums of the softmax and the router
// losses' reductions in a fixed order (the losses in fp64); token rows (x, xe, eo, y, dy, deo)
// bf16 in memory with fp32 math, one rounding per store. Integer atomics only (histograms); no
// float atomics anywhere, so every result is bit-identical from run to run.
#pragma once
#include "kernels/types.cuh"

namespace pg::kernels {

// ---- routing ------------------------------------------------------------------------------------
// probs = softmax(logits) per token, lse = logsumexp; sel = the k experts of largest score
// probs[n,e] + score_bias[e] (score_bias may be null; selection only), best first, ties to the
// lower index; gates[n,j] = probs[n,sel_j] / Σ_i probs[n,sel_i]. One warp per token; k <= 8.
void moe_router_fwd(float* probs, float* lse, int32_t* sel, float* gates, const float* logits,
                    const bf16* score_bias, int N, int E, int k, cudaStream_t stream);

// WRITES the whole dlogits (fp32 and/or bf16; either may be null) of
//   through the gates:  dlogits[n,sel_j] = g_j·(dgates_j − Σ_i g_i·dgates_i)   (dgates may be null)
//   + aux_scale · softmax-backward of dprobs[n,e] = E·f_e/N, f_e = counts[e]/(N·k)
//   + z_scale · 2·lse[n]·probs[n,e]/N
// (aux_scale, z_scale = loss scale × coefficient; 0 skips the term). One warp per token.
void moe_router_bwd(float* dlogits_f32, bf16* dlogits_bf16, const float* dgates, const float* gates,
                    const int32_t* sel, const float* probs, const float* lse, const int32_t* counts,
                    int N, int E, int k, double aux_scale, double z_scale, cudaStream_t stream);

// losses[0] = aux = E·Σ_e f_e·P_e (P_e = mean_n probs[n,e]), losses[1] = z = mean_n lse[n]², in
// fp64. scratch: E doubles. Fixed-order block reductions.
void moe_router_loss_fwd(double* losses, double* scratch, const float* probs, const float* lse,
                         const int32_t* counts, int N, int E, int k, cudaStream_t stream);

// ---- dispatch -----------------------------------------------------------------------------------
// The plan from sel, on the device with no host sync: counts[e] = assignments that chose e
// (before drops); slot, row_src as above (row_src WRITTEN whole, padding -1). Assignments are
// ranked per expert in priority order by chunks of kMoePlanChunk: a per-chunk histogram, a scan
// over chunks per expert, then each assignment's rank inside its chunk.
constexpr int kMoePlanChunk = 256;
inline int64_t moe_plan_scratch_ints(int N, int k, int E) {
  return 2 * ((int64_t(N) * k + kMoePlanChunk - 1) / kMoePlanChunk) * E;
}
void moe_dispatch_plan(int32_t* slot, int32_t* row_src, int32_t* counts, int32_t* scratch,
                       const int32_t* sel, int N, int E, int k, int cap, cudaStream_t stream);

// The row kernels below (gather, scatter, combine and its backward) move one row per warp in
// 16-byte packs of 8 bf16 when C % 8 == 0 and the row pointers are 16-byte aligned (the CudaMoe
// case), else one row per block element by element; both give the same results.
// xe[r,:] = x[row_src[r]/k,:], 0 for padding rows (WRITES all E·cap rows).
void moe_gather(bf16* xe, const bf16* x, const int32_t* row_src, int E, int cap, int k, int C,
                cudaStream_t stream);
// dx[n,:] (= or +=, per accumulate) Σ_j dxe[slot[n,j],:] over kept choices, in j order.
void moe_scatter(bf16* dx, bool accumulate, const bf16* dxe, const int32_t* slot, int N, int k, int C,
                 cudaStream_t stream);

// ---- combine ------------------------------------------------------------------------------------
// y[n,:] = Σ_j gates[n,j]·eo[slot[n,j],:] over kept choices, in j order (WRITES; 0 if all dropped).
void moe_combine_fwd(bf16* y, const bf16* eo, const float* gates, const int32_t* slot, int N, int k,
                     int C, cudaStream_t stream);
// deo[r,:] = gates[i]·dy[i/k,:] for the row r of assignment i, 0 for padding (WRITES all E·cap
// rows); dgates[i] = dy[i/k,:]·eo[slot[i],:], 0 when dropped (WRITES all N·k).
void moe_combine_bwd(bf16* deo, float* dgates, const bf16* dy, const bf16* eo, const float* gates,
                     const int32_t* row_src, int N, int E, int cap, int k, int C, cudaStream_t stream);

// ---- per-expert biases of the padded blocks -----------------------------------------------------
// out[e·cap + p, :] += bias[e, :] for all E·cap rows (out [E·cap, OC] bf16, bias [E, OC]).
void moe_expert_bias_fwd(bf16* out, const bf16* bias, int E, int cap, int OC, cudaStream_t stream);
// dbias[e, :] += Σ_p dout[e·cap + p, :] (fp32), the rows of each expert summed in a fixed order
// (padding rows carry zero gradients, so summing them changes nothing).
void moe_expert_bias_bwd(float* dbias, const bf16* dout, int E, int cap, int OC, cudaStream_t stream);

}  // namespace pg::kernels
