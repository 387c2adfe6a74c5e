// Causal softmax attention on the GPU, flash-attention style: bf16 q, k, v, out and gradients,
// fp32 accumulation and softmax, the T×T matrix never stored. kernels/attention.cu has the math,
// the tiling and the grid shapes; the CPU reference is pg::cpu::attention_fwd/bwd
// (src/backend/cpu/attention.cpp), which this computes up to bf16 rounding.
//
// Layouts (row-major):
//   q, k, v, dq, dk, dv : [B, T, NH, hs] with token stride qkv_stride elements: head h of token t
//                         of sequence b starts at (b·T + t)·qkv_stride + h·hs. qkv_stride = NH·hs
//                         for separate tensors, 3·NH·hs when they are the thirds of one fused
//                         qkv projection [B, T, 3, NH, hs].
//   out, dout           : [B, T, NH, hs] with token stride out_stride (NH·hs when contiguous).
//   lse                 : fp32 [B, NH, T], the natural-log logsumexp of each query row's scaled
//                         scores, saved by the forward for the backward.
// hs must be 32, 64 or 128; T >= 1 (any value, not only multiples of the tile); B·NH <= 65535.
// Unlike the CPU reference (which accumulates), the backward WRITES dq, dk, dv: the CUDA model
// gives each gradient its own buffer.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/types.cuh"

namespace pg::kernels {

struct AttentionDims {
  int B = 0, T = 0, NH = 0, hs = 0;
  int64_t qkv_stride = 0;  // 0 means NH·hs
  int64_t out_stride = 0;  // 0 means NH·hs
  float scale = 0.f;       // 0 means 1/sqrt(hs)
};

// Which forward kernel: Best is what attention_fwd picks (for hs = 64 on warpgroup MMA, each
// key tile's products waited for before its softmax; for hs = 128 the pipelined kernel, whose
// softmax of a key tile overlaps the previous tile's P·v); WgmmaPipe is the pipelined kernel for
// hs = 64 too (measured 2% slower than Best at B = 64, T = 1024), for tests and side-by-side
// benchmarks. hs = 32 has one kernel.
enum class AttentionFwdKernel { Best, WgmmaPipe };

// out = softmax_causal(scale·q·kᵀ)·v ; lse[b,h,t] = log Σ_{s<=t} exp(scale·q_t·k_s).
void attention_fwd(bf16* out, float* lse, const bf16* q, const bf16* k,
                   const bf16* v, const AttentionDims& dims, cudaStream_t stream,
                   AttentionFwdKernel kernel = AttentionFwdKernel::Best);

// Bytes of device workspace attention_bwd needs: an fp32 dq accumulator [B,T,NH,hs] and the fp32
// row terms D = rowsum(dout ∘ out) [B,NH,T].
size_t attention_bwd_workspace_bytes(const AttentionDims& dims);

// Which backward kernel: Best is what attention_bwd picks (for hs = 64 on Hopper warpgroup MMA);
// MmaSync keeps the mma.sync kernel of every head size, for tests and side-by-side benchmarks.
enum class AttentionBwdKernel { Best, MmaSync };

// Recomputes the probabilities from q, k and lse and WRITES (does not accumulate) dq, dk, dv:
//   dv_s = Σ_t P[t,s]·dout_t ; dS = P ∘ (dout·vᵀ - D) ; dq_t = scale·Σ_s dS[t,s]·k_s ;
//   dk_s = scale·Σ_t dS[t,s]·q_t.
// dk and dv are bitwise deterministic; dq is summed with fp32 atomics across key tiles, so its
// low bits may differ from run to run. workspace: attention_bwd_workspace_bytes(dims) bytes,
// 16-byte aligned, contents irrelevant on entry.
// With dbias_part (where attention_bwd_sums_bias holds: q, k, v as thirds of fused rows of
// 3·NH·hs), it also WRITES the fused q/k/v bias's gradient in partial sums: row b·⌈T/128⌉ + i holds
// the column sums of dq, dk and dv (columns [0, C), [C, 2C), [2C, 3C), C = NH·hs) over tokens
// 128i.. of sequence b, fp32 sums of the unrounded values, deterministic; the bias gradient is
// the sum of the attention_bwd_bias_rows(dims) rows (bias_accumulate). Without rope or QK-norm
// behind it, that is the gradient of the q/k/v layer's bias.
// acc, optional: a chain of backward calls (a model's layers) can keep dq's accumulator out of
// the pre-pass, which otherwise clears the workspace's (4·B·T·NH·hs bytes, as much DRAM traffic
// as the rest of the pre-pass). zeroed: an fp32 [B,T,NH,hs] buffer of zeros to accumulate dq in
// instead of the workspace's (it is left holding the sums); clear_next: one the call leaves all
// zeros, for the next call's `zeroed`, cleared by the hs = 64 Best kernel's blocks while their
// first tiles load (by a memset after the main kernel otherwise). Both 16-byte aligned, neither
// the other nor the workspace.
struct AttentionBwdAcc {
  float* zeroed = nullptr;
  float* clear_next = nullptr;
};
void attention_bwd(bf16* dq, bf16* dk, bf16* dv, void* workspace,
                   const bf16* dout, const bf16* out, const float* lse,
                   const bf16* q, const bf16* k, const bf16* v,
                   const AttentionDims& dims, cudaStream_t stream,
                   AttentionBwdKernel kernel = AttentionBwdKernel::Best, float* dbias_part = nullptr,
                   const AttentionBwdAcc& acc = {});
bool attention_bwd_sums_bias(const AttentionDims& dims, AttentionBwdKernel kernel = AttentionBwdKernel::Best);
int64_t attention_bwd_bias_rows(const AttentionDims& dims);

}  // namespace pg::kernels
