// One Mixture-of-Experts MLP block on the GPU: the same math, parameters and stats as CpuMoe
// (model/cpu_moe.hpp), over the kernels of kernels/moe.cuh and the cuBLASLt GemmRunner, in the
// mixed precision of CudaGpt (bf16 parameters and token rows, fp32 routing and gradients).
//
// Step, for tokens x[N,C] (bf16):
//   logits = x W_r^T (fp32 out) -> probs, lse, sel, gates (moe_router_fwd)
//   plan on the device (moe_dispatch_plan): counts, slot, row_src; no host sync anywhere
//   xe = gather(x) into padded expert blocks [E, cap, C]
//   fc = xe W1[e]^T (+ b1[e]), act = gelu|relu²(fc), eo = act W2[e]^T (+ b2[e]): two strided-batched
//       GEMMs over the expert dimension (batch E, stride cap·width), one launch each, with the
//       per-expert biases and the GELU (keeping fc) in their epilogues, as the backward's dX GEMM
//       takes gelu'(fc) and its dW GEMMs yield the bias gradients
//   y = Σ_kept g·eo[slot] (moe_combine_fwd) + shared experts (dense GEMMs accumulating into y)
//   router losses aux and z in fp64 on the device
// Backward mirrors it: combine_bwd -> batched GEMMs for dW2, dh, dW1, dxe -> scatter to dx, shared
// experts, router_bwd (gates + aux + z) -> the router GEMMs.
//
// Capacity: every expert owns `cap` rows of the padded blocks, cap(N) = min(N, ceil(capacity_factor
// · N · k / E)), and dropless (capacity_factor = 0) uses cap = N, which always fits since a token's k
// experts are distinct. The blocks are sized once for max_rows. Their cost, per MoE block, is
// E·cap·(2·C + 2·F) bf16 activations (xe, eo, fc, act) plus the same again in the shared scratch
// (deo, dxe, dh): with a capacity factor that is about cf·N·k rows, as the CPU's packed rows; dropless
// it is E·N rows, E/k times the packed size, and the expert GEMMs then also do E/k times the routed
// FLOPs (every padded row is multiplied). Use a capacity factor for speed; dropless is for checks and
// small E. Padding rows are zeroed in xe and deo, so they never contribute to a gradient.
//
// Memory: activations per block and one scratch shared by all blocks, carved by the owner out of its
// arena (bind()); the routing stats (counts [E], aux, z) are copied into pinned host memory at the
// end of forward(), asynchronously; stats() reads them once the stream has synchronised (CudaGpt's
// forward with targets does).
//
// Contract: backward() follows forward(); it WRITES dx (unlike CpuMoe, which accumulates) and
// ACCUMULATES parameter gradients (fp32, ParamTable layout) into G.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "backend/cuda/gemm.hpp"
#include "config/config.hpp"
#include "kernels/types.cuh"
#include "model/cpu_moe.hpp"
#include "model/param_table.hpp"

namespace pg {

class CudaMoe {
 public:
  using bf16 = kernels::bf16;
  // gemm: the owner's runner, on `stream`. Throws UserError when d_model, d_ff_expert or n_expert
  // is not a multiple of 8 (the padded blocks' GEMM strides and leading dimensions) or top_k > 8.
  CudaMoe(const Config& cfg, const ParamTable& table, int layer, int max_rows, cuda::GemmRunner& gemm,
          cudaStream_t stream);
  static size_t activation_bytes(const Config& cfg, int max_rows);
  static size_t scratch_bytes(const Config& cfg, int max_rows);
  // Both 256-byte aligned, of the sizes above; the scratch may be shared by every block.
  void bind(std::byte* activations, std::byte* scratch);

  // y[N,C] = MoE(x[N,C]) (WRITES y). x must stay unchanged until backward.
  void forward(const bf16* P, const bf16* x, bf16* y, int N);
  // dx = d⟨dy, y⟩/dx + the router losses' part; G += the gradients of ⟨dy, y⟩ + loss_scale·(aux and
  // z terms), as CpuMoe.
  void backward(const bf16* P, float* G, const bf16* dy, bf16* dx, double loss_scale);

  // The last forward's stats (valid once the stream has synchronised after it).
  MoeLayerStats stats() const;
  double objective() const;
  int capacity(int N) const;  // rows per expert for N tokens
  // Whether the expert GEMMs take the biases and the GELU (and their gradients) in their cuBLASLt
  // epilogues (the default, where cuBLASLt can fuse them for strided batches) or run them as
  // separate passes (the reference path the tests compare with).
  void set_fused_epilogues(bool on) { fuse_ = on; }
  // Whether the last forward's fc GEMM took the fused epilogue.
  bool epilogues_fused() const { return fused_last_; }

 private:
  void carve(std::byte* acts, std::byte* scratch);
  void linear_fwd(bf16* out, const bf16* inp, const bf16* w, const bf16* b, int N, int IC, int OC, float beta);
  void expert_weight_grad(const cuda::GemmArgs& w, float* db, const bf16* dout, int OC);
  void linear_bwd(bf16* dinp, bool accumulate, float* dw, float* db, const bf16* dout, const bf16* inp,
                  const bf16* w, int N, int IC, int OC);

  int layer_, E_, K_, C_, F_, S_, max_rows_, cap_max_;
  bool gelu_, fuse_ = true, fused_last_ = false;
  double capacity_factor_, aux_coef_, z_coef_;
  int64_t router_ = -1, score_bias_ = -1, fc_ = -1, fcb_ = -1, proj_ = -1, projb_ = -1;
  int64_t sh_fc_ = -1, sh_fcb_ = -1, sh_proj_ = -1, sh_projb_ = -1;
  cuda::GemmRunner& gemm_;
  cudaStream_t stream_;

  // Activations.
  float *probs_ = nullptr, *lse_ = nullptr, *gates_ = nullptr;
  int32_t *sel_ = nullptr, *slot_ = nullptr, *row_src_ = nullptr, *counts_ = nullptr;
  bf16 *xe_ = nullptr, *fc_act_ = nullptr, *act_ = nullptr, *eo_ = nullptr, *sh_fc_act_ = nullptr,
       *sh_act_ = nullptr;
  double* losses_ = nullptr;
  // Scratch.
  float *logits_ = nullptr, *dgates_ = nullptr, *bias_grad_ = nullptr;
  bf16 *dlogits_ = nullptr, *deo_ = nullptr, *dh1_ = nullptr, *dh2_ = nullptr, *dxe_ = nullptr;
  int32_t* plan_scratch_ = nullptr;
  double* colsum_ = nullptr;

  struct PinnedFree {
    void operator()(void* p) const;
  };
  std::unique_ptr<std::byte, PinnedFree> host_;  // counts [E] int32, then aux, z (double)
  const bf16* x_ = nullptr;
  int N_ = 0, cap_ = 0;
};

}  // namespace pg
