// The GPT plan (model/gpt.hpp) on one GPU: the same forward and backward as CpuGpt, over the
// CUDA kernels (kernels/) and the cuBLASLt GEMM layer, in mixed precision: bf16 parameters (the
// working copy of the fp32 master buffer) and activations, fp32 accumulation, norm statistics,
// softmax and loss, fp32 parameter gradients.
//
// Memory: every activation and scratch buffer is carved at construction from one device arena
// sized for (max_batch, seq_len); forward and backward allocate nothing. arena_bytes() says how
// much that is before any step runs; a device with less free memory than the arena plus the
// caller's other_bytes makes the constructor throw a UserError naming the bytes needed and free.
//
// Contract (as CpuGpt): backward() follows a forward() with targets, once; gradients ACCUMULATE
// into `grads` (fp32, laid out by the ParamTable). inputs and targets are device arrays [B, Tn].
// Each residual add is folded into the GEMM that ends its branch (the GEMM's C is the stream; with
// norms the next norm then reads the stream alone; set_residual_in_gemm(false) moves the adds into
// the norm kernels, kernels/norm.cuh, and MoE blocks always add there). Without norms (model.norm =
// none, and model.variant = lipschitz, docs/lipschitz.md) the fold also scales:
// x_out = s·(branch_in · W^T) + keep·x_in through the GEMM's alpha, beta and C_in, with
// keep = 1 - a, s = a/3 (attention) or a/1.129 (MLP; the stored activation is the unscaled GELU),
// a = 1/(2 n_layer), and attention logits at attn_scale/d_head for the lipschitz variant;
// keep = s = 1 otherwise. Its backward scales the branch's GEMMs by s and folds keep·dx + (input
// gradient) into the q/k/v and fc dX GEMMs' beta.
//
// MoE (model.variant = moe): the blocks cfg.is_moe_layer marks run a CudaMoe (model/cuda_moe.hpp)
// in place of the dense MLP, its activations and its shared scratch carved from the same arena; as
// CpuGpt, forward() returns the cross-entropy alone, moe_objective() is the weighted router losses
// the objective adds, and backward() includes their gradients (scaled by loss_scale). MoE needs
// norms here (the constructor refuses model.norm = none with MoE blocks).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <vector>

#include "backend/cuda/device.hpp"
#include "backend/cuda/gemm.hpp"
#include "config/config.hpp"
#include "kernels/gelu_gemm.cuh"
#include "kernels/norm.cuh"
#include "kernels/types.cuh"
#include "model/cuda_moe.hpp"
#include "model/gpt.hpp"
#include "model/param_table.hpp"

namespace pg {

class CudaGpt {
 public:
  using bf16 = kernels::bf16;
  // other_bytes: what the caller will allocate on the device besides the arena (parameters,
  // gradients, optimizer state); the check against free memory covers the sum.
  CudaGpt(const Config& cfg, const ParamTable& table, int max_batch, cudaStream_t stream, size_t other_bytes = 0);

  // Returns the mean cross-entropy with targets (synchronises the stream to read it), 0 without;
  // *n_correct (if given) receives the number of rows whose argmax is the target. Without the
  // loss readback (set_loss_readback(false)) it returns NaN and leaves the sums on the device for
  // loss(): the step then has no host synchronisation, so that a CUDA graph can capture it.
  double forward(const bf16* params, const int32_t* inputs, const int32_t* targets, int B, int Tn,
                 int64_t* n_correct = nullptr);
  void set_loss_readback(bool on) { loss_readback_ = on; }
  // The mean cross-entropy (and *n_correct, if that forward counted) of the last forward with
  // targets; synchronises the stream.
  double loss(int64_t* n_correct = nullptr);
  // grads += d(loss_scale · (mean loss + moe_objective()))/d params. after_stage (optional), called on the host as
  // the work is enqueued: after_stage(n_layer) once the head's and ln_f's gradients are enqueued,
  // then after_stage(l) once layer l's are (l = n_layer-1 .. 0); wte and wpe come last. Work
  // enqueued after the call no longer writes the gradients it announced (data parallelism starts
  // their reduction there).
  void backward(const bf16* params, float* grads, double loss_scale,
                const std::function<void(int)>& after_stage = {});

  // MoE: the weighted router losses of the last forward (0 for a dense model) and each MoE
  // block's routing stats; valid after a forward with targets (which synchronises the stream).
  double moe_objective() const;
  std::vector<MoeLayerStats> moe_stats() const;

  // [B·Tn, vocab_size] of the last forward without targets; a forward with targets leaves
  // d(mean loss)/d logits there instead (computed in the same pass as the losses).
  const bf16* logits() const { return logits_; }
  size_t arena_bytes() const { return arena_.bytes(); }
  // GEMM algorithms by timing instead of cuBLASLt's heuristic (cuda::GemmRunner::set_autotune).
  void set_gemm_autotune(bool on) { gemm_.set_autotune(on); }
  // Which of the MLP's GELU GEMMs go through kernels/gelu_gemm.cuh (where it takes the shape)
  // instead of cuBLASLt's GELU epilogues: none, the backward's (DGELU with the fc bias's sums), or
  // both (the default: the GPT-2 step 1.5% faster on an H200 than with cuBLASLt's; bench/RESULTS.md).
  enum class GeluGemm { None, Backward, All };
  void set_gelu_gemm(GeluGemm which) { gelu_gemm_ = which; }
  // Which of kernels/gelu_gemm.cuh's kernels those use (kernels::GeluGemmKernel: Solo, the default,
  // or Pair), to set them side by side.
  void set_gelu_gemm_kernel(kernels::GeluGemmKernel kernel) { gelu_gemm_kernel_ = kernel; }
  // With norms: the residual adds in the branches' last GEMMs (res_mid = res_in + att·W_oᵀ + b as
  // the GEMM's C, and the MLP's alike into the next block's res_in), each norm then reading the
  // stream alone, instead of the GEMMs writing a branch that the norm kernel adds to the stream:
  // 100 MB less traffic per norm at GPT-2's B = 64. On by default (the GPT-2 step 0.8 ms faster
  // on an H200, bench/RESULTS.md); off keeps the adds in the norm kernels.
  void set_residual_in_gemm(bool on) { residual_in_gemm_ = on; }
  // The attention backward's fp32 dq accumulator of block l in block l + 1's MLP pre-activation
  // (fc: bf16 [N, F], dead once block l + 1's MLP backward is done, as large as the accumulator
  // where F >= 2C), cleared by block l + 1's attention backward (kernels::AttentionBwdAcc), so that
  // only the last block's pre-pass clears one: 4·N·C bytes of DRAM writes less per block. On by
  // default where F >= 2C (the GPT-2 step 0.6 ms faster on an H200, bench/RESULTS.md); MoE
  // blocks, which keep no fc, use the workspace's accumulator. Throws std::invalid_argument where
  // F < 2C.
  void set_dq_acc_in_fc(bool on);
  // Which kernel the LayerNorm / RMSNorm backward of the blocks and the final norm uses
  // (kernels::NormBwdKernel: WarpRing, the default, or Group, to measure beside it).
  void set_norm_bwd_kernel(kernels::NormBwdKernel which) { norm_bwd_kernel_ = which; }

 private:
  using Layer = GptLayerOffsets;
  struct LayerActs {
    bf16 *res_in, *ln1, *q_raw, *k_raw, *q, *k, *v, *att, *res_mid, *ln2, *fc, *act;
    float *ln1_mean, *ln1_rstd, *q_rstd, *k_rstd, *lse, *ln2_mean, *ln2_rstd;
  };
  // Carves the arena (base == nullptr: only counts); returns the bytes used.
  size_t layout(std::byte* base);
  void linear_fwd(bf16* out, const bf16* inp, const bf16* P, int64_t w, int64_t b, int N, int IC, int OC);
  // out = scale·(inp · W^T) (+ b) + keep·res: a branch's last linear layer and the residual
  // around it in one GEMM (no norm after it).
  void residual_linear_fwd(bf16* out, const bf16* res, float keep, const bf16* inp, const bf16* P, int64_t w,
                           int64_t b, int N, int IC, int OC, float scale);
  // beta: 0 writes dinp, 1 accumulates into it, anything else dinp = beta·dinp + (dout·W) (the
  // residual stream's gradient through a convex residual).
  void linear_bwd(bf16* dinp, float beta, float* G, const bf16* dout, const bf16* inp, const bf16* P,
                  int64_t w, int64_t b, int N, int IC, int OC, float scale = 1.f,
                  const bf16* gelu_pre = nullptr, float* dinp_bias_grad = nullptr);
  int64_t qkv_stride() const { return fused_qkv_ ? 3 * int64_t(C_) : int64_t(C_); }
  // Whether the GELU GEMM of M×N×K runs through kernels/gelu_gemm.cuh: enabled, a shape it takes,
  // every pointer 16-byte aligned.
  bool use_gelu_gemm(bool backward, int M, int N, int K, std::initializer_list<const void*> ptrs) const;
  // Whether block l's MLP output GEMM adds the residual (set_residual_in_gemm; not MoE blocks,
  // whose experts write branch_).
  bool residual_in_gemm(int l) const { return has_norm_ && residual_in_gemm_ && !moe_[size_t(l)]; }

  Config cfg_;
  int max_batch_, L_, C_, F_, V_, NH_, HS_, S_;
  bool ln_, has_norm_, lip_, rope_, qk_norm_, gelu_, tied_, fused_qkv_ = false, gelu_epilogue_ = false;
  GeluGemm gelu_gemm_ = GeluGemm::All;
  kernels::GeluGemmKernel gelu_gemm_kernel_ = kernels::GeluGemmKernel::Solo;
  bool residual_in_gemm_ = true;
  bool dq_acc_in_fc_ = false;  // set in the constructor: F >= 2C
  kernels::NormBwdKernel norm_bwd_kernel_ = kernels::NormBwdKernel::WarpRing;
  // train.recompute: the blocks' MLP activation output (act) and norm outputs (ln1, ln2) live in
  // one shared buffer each (act_tmp_, ln_tmp_) and are recomputed in backward where needed.
  bool recompute_act_ = false, recompute_norm_ = false;
  bf16 *act_tmp_ = nullptr, *ln_tmp_ = nullptr;
  float eps_ = 0.f;  // the norms' epsilon, forward and recompute alike
  float softcap_;
  // Residuals without norms (see above): stream weight, branch scales, attention logit scale
  // (0: the kernel's default 1/sqrt(d_head)).
  float res_keep_ = 1.f, attn_out_scale_ = 1.f, mlp_out_scale_ = 1.f, attn_logit_scale_ = 0.f;
  int64_t wte_ = -1, wpe_ = -1, lnf_w_ = -1, lnf_b_ = -1, head_ = -1;
  std::vector<Layer> layers_;
  cudaStream_t stream_;
  cuda::GemmRunner gemm_;
  std::vector<std::unique_ptr<CudaMoe>> moe_;  // per layer; null for a dense MLP

  cuda::DeviceBuffer<std::byte> arena_;
  std::vector<LayerActs> acts_;
  bf16 *branch_, *res_final_, *lnf_, *logits_;
  float *lnf_mean_, *lnf_rstd_, *losses_;
  int32_t* correct_;
  bf16 *dres_, *dln_, *dq_, *dk_, *dv_, *datt_, *dact_;
  float *norm_scratch_, *bias_scratch_;
  void* attn_ws_;
  float* qkv_bias_part_ = nullptr;  // attention_bwd's q/k/v bias sums, where the fused bias comes from them
  double* loss_sums_;  // [2]: Σ losses, Σ correct of the last forward with targets
  int loss_rows_ = 0;  // its rows
  bool loss_readback_ = true;
  const int32_t *inputs_ = nullptr, *targets_ = nullptr;
  int B_ = 0, Tn_ = 0;
};

}  // namespace pg
