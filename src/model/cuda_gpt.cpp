// The GPT plan on one GPU (see cuda_gpt.hpp); the step-by-step mirror of model/cpu_gpt.cpp.
#include "model/cuda_gpt.hpp"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>

#include "backend/cuda/arena_carver.hpp"
#include "backend/cuda/check.hpp"
#include "core/error.hpp"
#include "kernels/activation.cuh"
#include "kernels/attention.cuh"
#include "kernels/bias.cuh"
#include "kernels/classifier.cuh"
#include "kernels/embedding.cuh"
#include "kernels/gelu_gemm.cuh"
#include "kernels/norm.cuh"
#include "kernels/rope.cuh"
#include "model/cpu_gpt.hpp"

namespace pg {

namespace {

constexpr float kLayerNormEps = 1e-5f, kRmsNormEps = 1e-6f;  // the CPU reference's defaults

}  // namespace

CudaGpt::CudaGpt(const Config& cfg, const ParamTable& t, int max_batch, cudaStream_t stream, size_t other_bytes)
    : cfg_(cfg), max_batch_(max_batch), stream_(stream), gemm_(stream) {
  const auto& m = cfg.model;
  L_ = m.n_layer, C_ = m.d_model, F_ = cfg.d_ff(), V_ = m.vocab_size, NH_ = m.n_head, HS_ = cfg.d_head();
  S_ = m.seq_len;
  dq_acc_in_fc_ = F_ >= 2 * C_;
  if (HS_ != 32 && HS_ != 64 && HS_ != 128)
    throw UserError("model.d_model / model.n_head: the cuda backend needs a head size of 32, 64 or 128 (got " +
                    std::to_string(HS_) + ")");
  ln_ = m.norm == "layernorm", has_norm_ = m.norm != "none", rope_ = m.pos == "rope", qk_norm_ = m.qk_norm;
  gelu_ = m.activation == "gelu";
  tied_ = m.tie_embeddings, softcap_ = float(m.logit_softcap);
  lip_ = m.variant == "lipschitz";
  if (lip_) {  // as CpuGpt: convex residuals with a = 1 / (2 n_layer), attention / 3, GELU / 1.129
    const double a = 1.0 / (2.0 * L_);
    res_keep_ = float(1.0 - a), attn_out_scale_ = float(a / 3.0), mlp_out_scale_ = float(a / kLipschitzGeluDivisor);
    attn_logit_scale_ = float(m.attn_scale / HS_);
  }

  const GptOffsets o = gpt_offsets(cfg, t);
  wte_ = o.wte, wpe_ = o.wpe, lnf_w_ = o.lnf_w, lnf_b_ = o.lnf_b, head_ = o.head;
  layers_ = o.layers;
  PG_CHECK(!has_norm_ || lnf_w_ >= 0, "parameter table lacks the final norm");
  for (const Layer& w : layers_) {
    PG_CHECK(!has_norm_ || (w.ln1_w >= 0 && w.ln2_w >= 0), "parameter table lacks a block's norms");
    // A bias would be scaled with its branch on the CPU, not by the GEMM's alpha (the config forbids it).
    PG_CHECK(!lip_ || (w.ob < 0 && w.projb < 0), "model.variant = lipschitz with biases");
  }
  // One [3C, C] q/k/v GEMM when the three weights (and biases, if any) lie back to back, which
  // build_gpt_params arranges; per-head q/k norms and RoPE work on separate q and k.
  fused_qkv_ = !rope_ && !qk_norm_;
  gelu_epilogue_ = gelu_ && F_ % 8 == 0;  // cuBLASLt's aux leading dimension: a multiple of 8
  for (const Layer& w : layers_) {
    const int64_t CC = int64_t(C_) * C_;
    fused_qkv_ = fused_qkv_ && w.k == w.q + CC && w.v == w.k + CC;
    fused_qkv_ = fused_qkv_ && ((w.qb < 0 && w.kb < 0 && w.vb < 0) || (w.kb == w.qb + C_ && w.vb == w.kb + C_));
  }

  // An MoE block writes its output for the next norm's residual add; without norms that add would
  // have to move into the MoE combine.
  if (!has_norm_ && cfg.moe.n_expert > 0)
    throw UserError("model.norm = none: MoE blocks need norms on the GPU (their output joins the residual in the "
                    "next norm); use model.norm = layernorm or rmsnorm");
  for (int l = 0; l < L_; ++l)  // an MoE block replaces the dense MLP (model.variant = moe only)
    moe_.push_back(cfg.is_moe_layer(l) ? std::make_unique<CudaMoe>(cfg, t, l, max_batch * S_, gemm_, stream_)
                                       : nullptr);
  recompute_act_ = cfg.train.recompute != "none";
  recompute_norm_ = cfg.train.recompute == "act_norm" && has_norm_;
  eps_ = ln_ ? kLayerNormEps : kRmsNormEps;
  acts_.resize(size_t(L_));
  const size_t need = layout(nullptr);
  size_t free_bytes = 0, total_bytes = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  if (need + other_bytes > free_bytes) {
    auto gib = [](size_t b) { return std::to_string(double(b) / double(size_t(1) << 30)).substr(0, 6) + " GiB"; };
    const std::string total = std::to_string(need + other_bytes) + " bytes (" + gib(need + other_bytes) + ")";
    throw UserError("train.batch_size=" + std::to_string(max_batch) + ", model.seq_len=" + std::to_string(S_) +
                    ": the run needs " + total + " on the GPU (activation arena " + std::to_string(need) +
                    (other_bytes ? ", parameters, gradients and optimizer state " + std::to_string(other_bytes) : "") +
                    "), the GPU has " + std::to_string(free_bytes) + " bytes (" + gib(free_bytes) + ") free");
  }
  arena_ = cuda::DeviceBuffer<std::byte>(need);
  layout(arena_.data());
}

size_t CudaGpt::layout(std::byte* base) {
  cuda::ArenaCarver a{base};
  const int64_t N = int64_t(max_batch_) * S_, NC = N * C_, NF = N * F_, NR = N * NH_;
  const bool any_moe = std::any_of(moe_.begin(), moe_.end(), [](const auto& b) { return b != nullptr; });
  std::byte* moe_scratch = any_moe ? a.take<std::byte>(int64_t(CudaMoe::scratch_bytes(cfg_, int(N)))) : nullptr;
  // train.recompute: one buffer for every block's act (and one for its ln1 and ln2), rewritten in
  // backward from what each block keeps (fc; res_in, res_mid and the norm statistics).
  act_tmp_ = recompute_act_ ? a.take<bf16>(NF) : nullptr;
  ln_tmp_ = recompute_norm_ ? a.take<bf16>(NC) : nullptr;
  for (size_t l = 0; l < acts_.size(); ++l) {
    LayerActs& x = acts_[l];
    x.res_in = a.take<bf16>(NC);
    if (has_norm_)
      x.ln1 = recompute_norm_ ? ln_tmp_ : a.take<bf16>(NC), x.ln1_mean = a.take<float>(N), x.ln1_rstd = a.take<float>(N);
    else x.ln1 = x.res_in, x.ln1_mean = x.ln1_rstd = nullptr;  // the block reads the stream itself
    // q, k, v: thirds of one [N, 3C] block, interleaved per token when fused (token stride 3C),
    // else three [N, C] tensors one after the other.
    bf16* qkv = a.take<bf16>(3 * NC);
    if (fused_qkv_) x.q = qkv, x.k = qkv + C_, x.v = qkv + 2 * C_;
    else x.q = qkv, x.k = qkv + NC, x.v = qkv + 2 * NC;
    if (qk_norm_) {
      x.q_raw = a.take<bf16>(NC), x.k_raw = a.take<bf16>(NC);
      x.q_rstd = a.take<float>(NR), x.k_rstd = a.take<float>(NR);
    } else {
      x.q_raw = x.q, x.k_raw = x.k, x.q_rstd = x.k_rstd = nullptr;
    }
    x.lse = a.take<float>(NR), x.att = a.take<bf16>(NC);
    x.res_mid = a.take<bf16>(NC);
    // An MoE block reads its input again in backward: its ln2 is kept.
    if (has_norm_)
      x.ln2 = recompute_norm_ && !moe_[l] ? ln_tmp_ : a.take<bf16>(NC), x.ln2_mean = a.take<float>(N),
      x.ln2_rstd = a.take<float>(N);
    else x.ln2 = x.res_mid, x.ln2_mean = x.ln2_rstd = nullptr;
    if (moe_[l]) {
      x.fc = x.act = nullptr;
      std::byte* m = a.take<std::byte>(int64_t(CudaMoe::activation_bytes(cfg_, int(N))));
      if (base) moe_[l]->bind(m, moe_scratch);
    } else {
      x.fc = a.take<bf16>(NF), x.act = recompute_act_ ? act_tmp_ : a.take<bf16>(NF);
    }
  }
  branch_ = a.take<bf16>(NC), res_final_ = a.take<bf16>(NC);
  if (has_norm_) lnf_ = a.take<bf16>(NC), lnf_mean_ = a.take<float>(N), lnf_rstd_ = a.take<float>(N);
  else lnf_ = res_final_, lnf_mean_ = lnf_rstd_ = nullptr;
  logits_ = a.take<bf16>(N * V_), losses_ = a.take<float>(N), correct_ = a.take<int32_t>(N);
  loss_sums_ = a.take<double>(2);
  dres_ = a.take<bf16>(NC), dln_ = a.take<bf16>(NC), datt_ = a.take<bf16>(NC);
  bf16* dqkv = a.take<bf16>(3 * NC);  // laid out as q, k, v above
  if (fused_qkv_) dq_ = dqkv, dk_ = dqkv + C_, dv_ = dqkv + 2 * C_;
  else dq_ = dqkv, dk_ = dqkv + NC, dv_ = dqkv + 2 * NC;
  dact_ = a.take<bf16>(NF);
  norm_scratch_ = a.take<float>(kernels::norm_bwd_scratch_floats(C_));
  // Bias gradients: bias_bwd's chunk sums, or one from a GEMM epilogue ([F], fewer floats).
  // gemm_dgelu's column sums, a row per warp of its 128-row tiles, where the GELU GEMMs may run.
  bias_scratch_ = a.take<float>(std::max({kernels::bias_bwd_scratch_floats(C_), kernels::bias_bwd_scratch_floats(3 * C_),
                                          kernels::bias_bwd_scratch_floats(F_),
                                          gelu_epilogue_ ? kernels::gelu_gemm_scratch_floats(int(N), F_) : 0}));
  kernels::AttentionDims dims;
  dims.B = max_batch_, dims.T = S_, dims.NH = NH_, dims.hs = HS_, dims.qkv_stride = qkv_stride();
  dims.scale = attn_logit_scale_;
  attn_ws_ = a.take<std::byte>(int64_t(kernels::attention_bwd_workspace_bytes(dims)));
  // The fused q/k/v bias's gradient from the attention backward's partial sums, where nothing
  // (RoPE, QK-norm) stands between that layer's output and attention.
  const bool fold_qkv_bias = fused_qkv_ && !rope_ && !qk_norm_ && !layers_.empty() && layers_[0].qb >= 0 &&
                             kernels::attention_bwd_sums_bias(dims);
  qkv_bias_part_ = fold_qkv_bias ? a.take<float>(kernels::attention_bwd_bias_rows(dims) * 3 * C_) : nullptr;
  return a.used;
}

bool CudaGpt::use_gelu_gemm(bool backward, int M, int N, int K, std::initializer_list<const void*> ptrs) const {
  if (gelu_gemm_ == GeluGemm::None || (!backward && gelu_gemm_ == GeluGemm::Backward) ||
      !kernels::gelu_gemm_supported(M, N, K))
    return false;
  return kernels::gelu_gemm_aligned(ptrs);
}

// out[N,OC] = inp[N,IC] · W[OC,IC]^T (+ b), the bias in the GEMM's epilogue.
void CudaGpt::linear_fwd(bf16* out, const bf16* inp, const bf16* P, int64_t w, int64_t b, int N, int IC, int OC) {
  cuda::GemmArgs g;
  g.M = N, g.N = OC, g.K = IC, g.A = inp, g.B = P + w, g.trans_b = true, g.C = out;
  g.out_type = cuda::OutType::BF16;
  if (b >= 0) g.epilogue = cuda::Epilogue::Bias, g.bias = P + b;
  gemm_.gemm(g);
}

void CudaGpt::residual_linear_fwd(bf16* out, const bf16* res, float keep, const bf16* inp, const bf16* P, int64_t w,
                                  int64_t b, int N, int IC, int OC, float scale) {
  PG_CHECK(b < 0 || scale == 1.f, "residual_linear_fwd: a scaled branch with a bias");
  cuda::GemmArgs g;
  g.M = N, g.N = OC, g.K = IC, g.A = inp, g.B = P + w, g.trans_b = true, g.C = out, g.C_in = res;
  g.out_type = cuda::OutType::BF16;
  g.alpha = scale, g.beta = keep;
  if (b >= 0) g.epilogue = cuda::Epilogue::Bias, g.bias = P + b;
  gemm_.gemm(g);
}

// dinp[N,IC] (= beta·dinp +) α·dout · W ; dW[OC,IC] += α·dout^T · inp ; db += Σ_rows dout
// (α = scale; only used without a bias). With gelu_pre, dinp = (dout · W) ∘ gelu'(gelu_pre): the
// gradient through a GELU whose input gelu_pre the forward stored (not with accumulate); with
// dinp_bias_grad too, dinp_bias_grad += Σ_rows dinp, the bias gradient of the layer that fed the
// GELU, from the dX GEMM's epilogue where cuBLASLt fuses it.
// db comes from bias_bwd rather than the dW GEMM's BGRADB epilogue: cuBLASLt runs BGRADB as a
// reduction kernel of its own anyway (globalKernelBgradAB_v2, 2.3-2.7 TB/s in bench/RESULTS.md's
// profile of the step).
void CudaGpt::linear_bwd(bf16* dinp, float beta, float* G, const bf16* dout, const bf16* inp,
                         const bf16* P, int64_t w, int64_t b, int N, int IC, int OC, float scale,
                         const bf16* gelu_pre, float* dinp_bias_grad) {
  PG_CHECK(b < 0 || scale == 1.f, "linear_bwd: a scaled gradient with a bias");
  PG_CHECK(!gelu_pre || beta == 0.f, "linear_bwd: a GELU gradient cannot accumulate");
  PG_CHECK(!dinp_bias_grad || gelu_pre, "linear_bwd: an input's bias gradient without a GELU gradient");
  if (gelu_pre && use_gelu_gemm(true, N, IC, OC, {dinp, dout, P + w, gelu_pre, bias_scratch_})) {
    kernels::gemm_dgelu(dinp, dinp_bias_grad, bias_scratch_, dout, P + w, gelu_pre, scale, N, IC, OC, stream_,
                        gelu_gemm_kernel_);
  } else {
    cuda::GemmArgs d;
    d.M = N, d.N = IC, d.K = OC, d.A = dout, d.B = P + w, d.C = dinp, d.out_type = cuda::OutType::BF16;
    d.alpha = scale, d.beta = beta;
    if (gelu_pre) d.epilogue = cuda::Epilogue::DGelu, d.aux = const_cast<bf16*>(gelu_pre);
    if (dinp_bias_grad) {
      cuda::GemmArgs f = d;
      f.epilogue = cuda::Epilogue::DGeluBiasGrad, f.bias_grad = bias_scratch_;
      if (gemm_.supports(f)) d = f;
    }
    gemm_.gemm(d);
    if (d.epilogue == cuda::Epilogue::DGeluBiasGrad) kernels::bias_accumulate(dinp_bias_grad, bias_scratch_, IC, stream_);
    else if (dinp_bias_grad) kernels::bias_bwd(dinp_bias_grad, bias_scratch_, dinp, N, IC, stream_);
  }
  cuda::GemmArgs g;
  g.M = OC, g.N = IC, g.K = N, g.A = dout, g.trans_a = true, g.B = inp, g.C = G + w, g.alpha = scale, g.beta = 1.f;
  gemm_.gemm(g);
  if (b >= 0) kernels::bias_bwd(G + b, bias_scratch_, dout, N, OC, stream_);
}

double CudaGpt::forward(const bf16* P, const int32_t* inputs, const int32_t* targets, int B, int Tn,
                        int64_t* n_correct) {
  PG_CHECK(B >= 1 && B <= max_batch_ && Tn >= 1 && Tn <= S_, "forward: batch or length beyond the arena");
  B_ = B, Tn_ = Tn, inputs_ = inputs, targets_ = targets;
  const int N = B * Tn;
  const auto kind = ln_ ? kernels::NormKind::LayerNorm : kernels::NormKind::RMSNorm;
  auto par = [&](int64_t o) { return o >= 0 ? P + o : nullptr; };
  kernels::AttentionDims dims;
  dims.B = B, dims.T = Tn, dims.NH = NH_, dims.hs = HS_, dims.qkv_stride = qkv_stride();
  dims.scale = attn_logit_scale_;

  kernels::embedding_fwd(acts_[0].res_in, inputs, P + wte_, par(wpe_), B, Tn, C_, stream_);
  for (int l = 0; l < L_; ++l) {
    const Layer& w = layers_[size_t(l)];
    LayerActs& a = acts_[size_t(l)];
    // x = res_mid(l-1) + mlp(l-1) (the residual add of the previous block), ln1 = norm(x). x is
    // in res_in already for block 0 (the embeddings) and where the previous block's last GEMM
    // added the residual (always without norms, where ln1 aliases res_in; with norms under
    // set_residual_in_gemm); otherwise the norm kernel sums res_mid(l-1) + branch_ into res_in.
    if (has_norm_ && (l == 0 || residual_in_gemm(l - 1)))
      kernels::residual_norm_fwd(nullptr, a.ln1, a.ln1_mean, a.ln1_rstd, a.res_in, nullptr, P + w.ln1_w,
                                 par(w.ln1_b), N, C_, eps_, kind, stream_);
    else if (has_norm_)
      kernels::residual_norm_fwd(a.res_in, a.ln1, a.ln1_mean, a.ln1_rstd, acts_[size_t(l) - 1].res_mid, branch_,
                                 P + w.ln1_w, par(w.ln1_b), N, C_, eps_, kind, stream_);
    if (fused_qkv_) {
      linear_fwd(a.q, a.ln1, P, w.q, w.qb, N, C_, 3 * C_);
    } else {
      linear_fwd(a.q_raw, a.ln1, P, w.q, w.qb, N, C_, C_);
      linear_fwd(a.k_raw, a.ln1, P, w.k, w.kb, N, C_, C_);
      linear_fwd(a.v, a.ln1, P, w.v, w.vb, N, C_, C_);
    }
    if (qk_norm_) {  // parameter-free RMS norm of each head's q and k
      kernels::residual_norm_fwd(nullptr, a.q, nullptr, a.q_rstd, a.q_raw, nullptr, nullptr, nullptr, N * NH_, HS_,
                                 kRmsNormEps, kernels::NormKind::RMSNorm, stream_);
      kernels::residual_norm_fwd(nullptr, a.k, nullptr, a.k_rstd, a.k_raw, nullptr, nullptr, nullptr, N * NH_, HS_,
                                 kRmsNormEps, kernels::NormKind::RMSNorm, stream_);
    }
    if (rope_) {
      kernels::rope_fwd(a.q, B, Tn, NH_, HS_, float(cfg_.model.rope_theta), stream_);
      kernels::rope_fwd(a.k, B, Tn, NH_, HS_, float(cfg_.model.rope_theta), stream_);
    }
    kernels::attention_fwd(a.att, a.lse, a.q, a.k, a.v, dims, stream_);
    if (has_norm_ && residual_in_gemm_) {  // res_mid = res_in + att W_o^T + b in the GEMM, then ln2 alone
      residual_linear_fwd(a.res_mid, a.res_in, 1.f, a.att, P, w.o, w.ob, N, C_, C_, 1.f);
      kernels::residual_norm_fwd(nullptr, a.ln2, a.ln2_mean, a.ln2_rstd, a.res_mid, nullptr, P + w.ln2_w,
                                 par(w.ln2_b), N, C_, eps_, kind, stream_);
    } else if (has_norm_) {
      linear_fwd(branch_, a.att, P, w.o, w.ob, N, C_, C_);
      kernels::residual_norm_fwd(a.res_mid, a.ln2, a.ln2_mean, a.ln2_rstd, a.res_in, branch_, P + w.ln2_w,
                                 par(w.ln2_b), N, C_, eps_, kind, stream_);
    } else {  // res_mid = keep·res_in + s·(att W_o^T), which ln2 aliases
      residual_linear_fwd(a.res_mid, a.res_in, res_keep_, a.att, P, w.o, w.ob, N, C_, C_, attn_out_scale_);
    }
    if (CudaMoe* moe = moe_[size_t(l)].get()) {  // MoE blocks have norms (the constructor checks)
      moe->forward(P, a.ln2, branch_, N);
    } else if (gelu_epilogue_ && use_gelu_gemm(false, N, F_, C_, {a.act, a.fc, a.ln2, P + w.fc, par(w.fcb)})) {
      kernels::gemm_bias_gelu_aux(a.act, a.fc, a.ln2, P + w.fc, par(w.fcb), N, F_, C_, stream_, gelu_gemm_kernel_);
    } else if (gelu_epilogue_) {  // act = gelu(ln2·Wfc^T + b) with the pre-activation kept in fc, one GEMM
      cuda::GemmArgs g;
      g.M = N, g.N = F_, g.K = C_, g.A = a.ln2, g.B = P + w.fc, g.trans_b = true, g.C = a.act, g.aux = a.fc;
      g.out_type = cuda::OutType::BF16;
      g.epilogue = w.fcb >= 0 ? cuda::Epilogue::BiasGeluAux : cuda::Epilogue::GeluAux;
      g.bias = par(w.fcb);
      gemm_.gemm(g);
    } else {
      linear_fwd(a.fc, a.ln2, P, w.fc, w.fcb, N, C_, F_);
      if (gelu_) kernels::gelu_fwd(a.act, a.fc, int64_t(N) * F_, stream_);
      else kernels::relu2_fwd(a.act, a.fc, int64_t(N) * F_, stream_);
    }
    bf16* const res_next = l + 1 < L_ ? acts_[size_t(l) + 1].res_in : res_final_;
    if (has_norm_ && residual_in_gemm(l)) {  // the next block's input = res_mid + act W_proj^T + b
      residual_linear_fwd(res_next, a.res_mid, 1.f, a.act, P, w.proj, w.projb, N, F_, C_, 1.f);
    } else if (has_norm_) {
      if (!moe_[size_t(l)]) linear_fwd(branch_, a.act, P, w.proj, w.projb, N, F_, C_);  // MoE wrote branch_
    } else {  // the next block's input (or the head's) = keep·res_mid + s·(act W_proj^T)
      residual_linear_fwd(res_next, a.res_mid, res_keep_, a.act, P, w.proj, w.projb, N, F_, C_, mlp_out_scale_);
    }
  }
  // Without norms lnf_ aliases res_final_, which the last block wrote; with the residual add in
  // the last block's GEMM, res_final_ is written too.
  if (has_norm_ && residual_in_gemm(L_ - 1))
    kernels::residual_norm_fwd(nullptr, lnf_, lnf_mean_, lnf_rstd_, res_final_, nullptr, P + lnf_w_, par(lnf_b_), N,
                               C_, eps_, kind, stream_);
  else if (has_norm_)
    kernels::residual_norm_fwd(res_final_, lnf_, lnf_mean_, lnf_rstd_, acts_[size_t(L_) - 1].res_mid, branch_,
                               P + lnf_w_, par(lnf_b_), N, C_, eps_, kind, stream_);
  cuda::GemmArgs g;
  g.M = N, g.N = V_, g.K = C_, g.A = lnf_, g.B = P + head_, g.trans_b = true, g.C = logits_;
  g.out_type = cuda::OutType::BF16;
  gemm_.gemm(g);
  if (!targets) return 0.0;
  // Losses and, in the same pass, dlogits over the logits for loss_scale = 1 (backward scales the
  // head's GEMMs by its loss_scale): one pass over the [N, V] logits instead of two.
  kernels::fused_classifier(logits_, losses_, n_correct ? correct_ : nullptr, targets, N, V_, V_, 1.f / float(N),
                            softcap_, true, stream_);
  // The sums on the device: 16 bytes cross to the host, and the host adds nothing.
  kernels::loss_sums(loss_sums_, losses_, n_correct ? correct_ : nullptr, N, stream_);
  loss_rows_ = N;
  if (!loss_readback_) return std::numeric_limits<double>::quiet_NaN();
  return loss(n_correct);
}

double CudaGpt::loss(int64_t* n_correct) {
  PG_CHECK(loss_rows_ > 0, "loss: no forward with targets yet");
  double sums[2] = {0.0, 0.0};
  CUDA_CHECK(cudaMemcpyAsync(sums, loss_sums_, sizeof(sums), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (n_correct) *n_correct = int64_t(sums[1]);
  return sums[0] / double(loss_rows_);
}

void CudaGpt::set_dq_acc_in_fc(bool on) {
  if (on && F_ < 2 * C_)
    throw std::invalid_argument("CudaGpt::set_dq_acc_in_fc: needs d_ff >= 2·d_model (the fp32 dq accumulator in the "
                                "bf16 fc activation), got d_ff " + std::to_string(F_) + ", d_model " +
                                std::to_string(C_));
  dq_acc_in_fc_ = on;
}

void CudaGpt::backward(const bf16* P, float* G, double loss_scale, const std::function<void(int)>& after_stage) {
  PG_CHECK(targets_ != nullptr, "backward without a forward with targets");
  const int B = B_, Tn = Tn_, N = B * Tn;
  const auto kind = ln_ ? kernels::NormKind::LayerNorm : kernels::NormKind::RMSNorm;
  auto gpar = [&](int64_t o) { return o >= 0 ? G + o : nullptr; };
  auto par = [&](int64_t o) { return o >= 0 ? P + o : nullptr; };  // norm biases of a recompute
  kernels::AttentionDims dims;
  dims.B = B, dims.T = Tn, dims.NH = NH_, dims.hs = HS_, dims.qkv_stride = qkv_stride();
  dims.scale = attn_logit_scale_;
  // Without norms the input gradients of the q/k/v and fc GEMMs land on the residual stream's
  // gradient directly: dres = keep·dres + dX (beta = keep).
  bf16* dln = has_norm_ ? dln_ : dres_;
  const float dx_beta = has_norm_ ? 0.f : res_keep_;

  // With norms, the bias gradients of the attention output and MLP projection layers are column
  // sums of the residual stream's gradient, which the norm backward that writes it sums on the way
  // (dsum): the o bias from ln2's, block l's proj bias from ln1's of block l + 1 (lnf's for the
  // last block). Their linear backward then skips the bias.
  auto proj_bias_in_norm = [&](int l) { return has_norm_ && !moe_[size_t(l)] && layers_[size_t(l)].projb >= 0; };
  auto o_bias_in_norm = [&](int l) { return has_norm_ && layers_[size_t(l)].ob >= 0; };
  // set_dq_acc_in_fc: block l's dq accumulator, or null for the workspace's (the last block's, and
  // where block l + 1 is MoE).
  auto dq_acc_of = [&](int l) {
    return dq_acc_in_fc_ && l + 1 < L_ ? reinterpret_cast<float*>(acts_[size_t(l) + 1].fc) : nullptr;
  };

  // logits_ holds d(mean loss)/d logits since the forward.
  linear_bwd(dln, 0.f, G, logits_, lnf_, P, head_, -1, N, C_, V_, float(loss_scale));
  if (has_norm_)
    kernels::norm_bwd(dres_, false, G + lnf_w_, gpar(lnf_b_),
                      proj_bias_in_norm(L_ - 1) ? G + layers_.back().projb : nullptr, norm_scratch_, dln_,
                      res_final_, P + lnf_w_, lnf_mean_, lnf_rstd_, N, C_, kind, stream_, norm_bwd_kernel_);
  if (after_stage) after_stage(L_);
  for (int l = L_ - 1; l >= 0; --l) {
    const Layer& w = layers_[size_t(l)];
    const LayerActs& a = acts_[size_t(l)];
    // MLP branch: dres holds d(block output); it also flows straight through to res_mid
    // (scaled by keep, without norms, in the fc dX GEMM below).
    if (CudaMoe* moe = moe_[size_t(l)].get()) {
      moe->backward(P, G, dres_, dln_, loss_scale);  // writes dln_ (MoE blocks have norms)
    } else {
      const int64_t projb = proj_bias_in_norm(l) ? -1 : w.projb;
      if (recompute_act_) {  // act = gelu(fc) (or relu²), which the proj weight gradient reads
        if (gelu_) kernels::gelu_fwd(a.act, a.fc, int64_t(N) * F_, stream_);
        else kernels::relu2_fwd(a.act, a.fc, int64_t(N) * F_, stream_);
      }
      int64_t fcb = w.fcb;
      if (gelu_epilogue_) {  // dact = (dres·Wproj) ∘ gelu'(fc) in the dX GEMM's epilogue, the fc bias's gradient too
        linear_bwd(dact_, 0.f, G, dres_, a.act, P, w.proj, projb, N, F_, C_, mlp_out_scale_, a.fc, gpar(w.fcb));
        fcb = -1;
      } else {
        linear_bwd(dact_, 0.f, G, dres_, a.act, P, w.proj, projb, N, F_, C_, mlp_out_scale_);
        if (gelu_) kernels::gelu_bwd(dact_, dact_, a.fc, int64_t(N) * F_, stream_);
        else kernels::relu2_bwd(dact_, dact_, a.fc, int64_t(N) * F_, stream_);
      }
      if (recompute_norm_)  // ln2 = norm(res_mid), which the fc weight gradient reads
        kernels::residual_norm_fwd(nullptr, a.ln2, a.ln2_mean, a.ln2_rstd, a.res_mid, nullptr, P + w.ln2_w,
                                   par(w.ln2_b), N, C_, eps_, kind, stream_);
      linear_bwd(dln, dx_beta, G, dact_, a.ln2, P, w.fc, fcb, N, C_, F_);
    }
    if (has_norm_)
      kernels::norm_bwd(dres_, true, G + w.ln2_w, gpar(w.ln2_b), o_bias_in_norm(l) ? G + w.ob : nullptr,
                        norm_scratch_, dln_, a.res_mid, P + w.ln2_w, a.ln2_mean, a.ln2_rstd, N, C_, kind, stream_,
                        norm_bwd_kernel_);
    // Attention branch.
    linear_bwd(datt_, 0.f, G, dres_, a.att, P, w.o, o_bias_in_norm(l) ? -1 : w.ob, N, C_, C_, attn_out_scale_);
    kernels::AttentionBwdAcc acc;
    acc.zeroed = dq_acc_of(l), acc.clear_next = l > 0 ? dq_acc_of(l - 1) : nullptr;
    kernels::attention_bwd(dq_, dk_, dv_, attn_ws_, datt_, a.att, a.lse, a.q, a.k, a.v, dims, stream_,
                           kernels::AttentionBwdKernel::Best, qkv_bias_part_, acc);
    if (rope_) {
      kernels::rope_bwd(dq_, B, Tn, NH_, HS_, float(cfg_.model.rope_theta), stream_);
      kernels::rope_bwd(dk_, B, Tn, NH_, HS_, float(cfg_.model.rope_theta), stream_);
    }
    if (qk_norm_) {  // in place through the parameter-free per-head RMS norm
      kernels::norm_bwd(dq_, false, nullptr, nullptr, nullptr, nullptr, dq_, a.q_raw, nullptr, nullptr, a.q_rstd,
                        N * NH_, HS_, kernels::NormKind::RMSNorm, stream_);
      kernels::norm_bwd(dk_, false, nullptr, nullptr, nullptr, nullptr, dk_, a.k_raw, nullptr, nullptr, a.k_rstd,
                        N * NH_, HS_, kernels::NormKind::RMSNorm, stream_);
    }
    if (recompute_norm_)  // ln1 = norm(res_in), which the q/k/v weight gradients read
      kernels::residual_norm_fwd(nullptr, a.ln1, a.ln1_mean, a.ln1_rstd, a.res_in, nullptr, P + w.ln1_w,
                                 par(w.ln1_b), N, C_, eps_, kind, stream_);
    if (fused_qkv_) {
      if (qkv_bias_part_)
        kernels::bias_accumulate(G + w.qb, qkv_bias_part_, 3 * C_, stream_, int(kernels::attention_bwd_bias_rows(dims)));
      linear_bwd(dln, dx_beta, G, dq_, a.ln1, P, w.q, qkv_bias_part_ ? -1 : w.qb, N, C_, 3 * C_);
    } else {
      linear_bwd(dln, dx_beta, G, dq_, a.ln1, P, w.q, w.qb, N, C_, C_);
      linear_bwd(dln, 1.f, G, dk_, a.ln1, P, w.k, w.kb, N, C_, C_);
      linear_bwd(dln, 1.f, G, dv_, a.ln1, P, w.v, w.vb, N, C_, C_);
    }
    if (has_norm_)
      kernels::norm_bwd(dres_, true, G + w.ln1_w, gpar(w.ln1_b),
                        l > 0 && proj_bias_in_norm(l - 1) ? G + layers_[size_t(l) - 1].projb : nullptr,
                        norm_scratch_, dln_, a.res_in, P + w.ln1_w, a.ln1_mean, a.ln1_rstd, N, C_, kind, stream_,
                        norm_bwd_kernel_);
    if (after_stage) after_stage(l);
  }
  kernels::embedding_bwd(G + wte_, gpar(wpe_), dres_, inputs_, B, Tn, C_, stream_);
  targets_ = nullptr;
}

double CudaGpt::moe_objective() const {
  double sum = 0.0;
  for (const auto& b : moe_)
    if (b) sum += b->objective();
  return sum;
}

std::vector<MoeLayerStats> CudaGpt::moe_stats() const {
  std::vector<MoeLayerStats> out;
  for (const auto& b : moe_)
    if (b) out.push_back(b->stats());
  return out;
}

}  // namespace pg
