#include "model/cpu_gpt.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cpu/ops.hpp"
#include "core/error.hpp"

namespace pg {

namespace {
template <typename T>
void scale_in_place(T* x, T s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}
}  // namespace

template <typename T>
CpuGpt<T>::CpuGpt(const Config& cfg, const ParamTable& t, int max_batch) : cfg_(cfg), max_batch_(max_batch) {
  const auto& m = cfg.model;
  L_ = m.n_layer, C_ = m.d_model, F_ = cfg.d_ff(), V_ = m.vocab_size, NH_ = m.n_head, HS_ = cfg.d_head();
  S_ = m.seq_len;
  ln_ = m.norm == "layernorm", has_norm_ = m.norm != "none", rope_ = m.pos == "rope";
  qk_norm_ = m.qk_norm, gelu_ = m.activation == "gelu", tied_ = m.tie_embeddings;
  softcap_ = m.logit_softcap;
  lip_ = m.variant == "lipschitz";
  res_alpha_ = lip_ ? 1.0 / (2.0 * L_) : 1.0;
  att_scale_ = lip_ ? m.attn_scale / HS_ : 1.0 / std::sqrt(double(HS_));

  const GptOffsets o = gpt_offsets(cfg, t);
  wte_ = o.wte, wpe_ = o.wpe, lnf_w_ = o.lnf_w, lnf_b_ = o.lnf_b, head_ = o.head;
  layers_ = o.layers;
  for (int l = 0; l < L_; ++l)  // an MoE block replaces the dense MLP (model.variant = moe only)
    moe_.push_back(cfg.is_moe_layer(l) ? std::make_unique<CpuMoe<T>>(cfg, t, l, max_batch * S_) : nullptr);

  // Arena layout: sizes first, then pointers.
  const int64_t N = int64_t(max_batch) * S_, NC = N * C_, NF = N * F_, NV = N * V_;
  const int64_t P = int64_t(max_batch) * NH_ * S_ * S_, NR = N * NH_;
  const int64_t per_layer = 2 * NC + (has_norm_ ? NC + 2 * N : 0) + (qk_norm_ ? 2 * NC + 2 * NR : 0) + 3 * NC + P +
                            NC + (has_norm_ ? NC + 2 * N : 0);
  int64_t total = L_ * per_layer + NC + (has_norm_ ? NC + 2 * N : 0) + NV + (softcap_ > 0 ? NV : 0) + 2 * N;
  total += 7 * NC + 2 * NF;  // backward scratch
  int n_moe = 0;
  for (const auto& b : moe_) n_moe += b != nullptr;
  total += (L_ - n_moe) * 2 * NF;  // dense MLP activations
  if (n_moe > 0)
    total += n_moe * CpuMoe<T>::activation_elems(cfg, int(N)) + CpuMoe<T>::scratch_elems(cfg, int(N));
  arena_.assign(size_t(total), T(0));
  T* cur = arena_.data();
  auto take = [&](int64_t n) { T* p = cur; cur += n; return p; };
  acts_.resize(size_t(L_));
  for (int l = 0; l < L_; ++l) {
    LayerActs& a = acts_[size_t(l)];
    a.res_in = take(NC);
    a.res_mid = take(NC);
    if (has_norm_) a.ln1 = take(NC), a.ln1_mean = take(N), a.ln1_rstd = take(N);
    else a.ln1 = a.res_in, a.ln1_mean = a.ln1_rstd = nullptr;
    if (qk_norm_) a.q_raw = take(NC), a.k_raw = take(NC), a.q_rstd = take(NR), a.k_rstd = take(NR);
    else a.q_raw = a.k_raw = a.q_rstd = a.k_rstd = nullptr;
    a.q = take(NC), a.k = take(NC), a.v = take(NC), a.probs = take(P), a.att = take(NC);
    if (has_norm_) a.ln2 = take(NC), a.ln2_mean = take(N), a.ln2_rstd = take(N);
    else a.ln2 = a.res_mid, a.ln2_mean = a.ln2_rstd = nullptr;
    if (moe_[size_t(l)]) a.fc = a.act = nullptr;
    else a.fc = take(NF), a.act = take(NF);
  }
  if (n_moe > 0) {
    T* moe_scratch = take(CpuMoe<T>::scratch_elems(cfg, int(N)));
    for (auto& b : moe_)
      if (b) b->bind(take(CpuMoe<T>::activation_elems(cfg, int(N))), moe_scratch);
  }
  res_final_ = take(NC);
  if (has_norm_) lnf_ = take(NC), lnf_mean_ = take(N), lnf_rstd_ = take(N);
  else lnf_ = res_final_, lnf_mean_ = lnf_rstd_ = nullptr;
  logits_ = take(NV);
  dlogits_ = softcap_ > 0 ? take(NV) : logits_;
  losses_ = take(N);
  lse_ = take(N);
  dres_ = take(NC), dln_ = take(NC), dq_ = take(NC), dk_ = take(NC), dv_ = take(NC), dtmp_ = take(NC), datt_ = take(NC);
  dfc_ = take(NF), dact_ = take(NF);
  PG_CHECK(cur == arena_.data() + arena_.size(), "arena layout mismatch");
  inputs_.resize(size_t(N));
  targets_.resize(size_t(N));
}

template <typename T>
void CpuGpt<T>::norm_fwd(T* out, T* mean, T* rstd, const T* inp, int64_t w, int64_t b, const T* P, int N) {
  if (!has_norm_) return;  // out aliases inp
  if (ln_) cpu::layernorm_fwd(out, mean, rstd, inp, P + w, b >= 0 ? P + b : nullptr, N, C_);
  else cpu::rmsnorm_fwd(out, rstd, inp, P + w, N, C_);
}

template <typename T>
void CpuGpt<T>::norm_bwd(T* dinp, T* G, const T* dout, const T* inp, int64_t w, int64_t b, const T* P,
                         const T* mean, const T* rstd, int N) {
  if (!has_norm_) {
    cpu::axpy(dinp, dout, T(1), int64_t(N) * C_);
    return;
  }
  if (ln_) cpu::layernorm_bwd(dinp, G + w, b >= 0 ? G + b : nullptr, dout, inp, P + w, mean, rstd, N, C_);
  else cpu::rmsnorm_bwd(dinp, G + w, dout, inp, P + w, rstd, N, C_);
}

template <typename T>
double CpuGpt<T>::forward(const T* P, const int32_t* inputs, const int32_t* targets, int B, int Tn,
                          int64_t* n_correct) {
  PG_CHECK(B >= 1 && B <= max_batch_ && Tn >= 1 && Tn <= S_, "forward: batch or length beyond the arena");
  B_ = B, Tn_ = Tn;
  const int N = B * Tn;
  std::copy(inputs, inputs + N, inputs_.begin());
  if (targets) std::copy(targets, targets + N, targets_.begin());
  cpu::embedding_fwd(acts_[0].res_in, inputs, P + wte_, wpe_ >= 0 ? P + wpe_ : nullptr, B, Tn, C_);
  blocks_fwd(P, B, Tn);
  if (!targets) return 0.0;
  return cpu::cross_entropy_fwd(losses_, n_correct, logits_, targets, N, V_, lse_);
}

template <typename T>
void CpuGpt<T>::forward_from_embeddings(const T* P, const T* x, int B, int Tn) {
  PG_CHECK(B >= 1 && B <= max_batch_ && Tn >= 1 && Tn <= S_, "forward: batch or length beyond the arena");
  B_ = B, Tn_ = Tn;
  std::copy(x, x + int64_t(B) * Tn * C_, acts_[0].res_in);
  blocks_fwd(P, B, Tn);
}

template <typename T>
void CpuGpt<T>::blocks_fwd(const T* P, int B, int Tn) {
  const int N = B * Tn;
  const int64_t NC = int64_t(N) * C_;
  auto bias = [&](int64_t o) { return o >= 0 ? P + o : nullptr; };
  const T keep = T(1.0 - res_alpha_);  // lipschitz: weight of the residual stream
  for (int l = 0; l < L_; ++l) {
    const Layer& w = layers_[size_t(l)];
    LayerActs& a = acts_[size_t(l)];
    norm_fwd(a.ln1, a.ln1_mean, a.ln1_rstd, a.res_in, w.ln1_w, w.ln1_b, P, N);
    T* q_lin = qk_norm_ ? a.q_raw : a.q;
    T* k_lin = qk_norm_ ? a.k_raw : a.k;
    cpu::matmul_fwd(q_lin, a.ln1, P + w.q, bias(w.qb), N, C_, C_);
    cpu::matmul_fwd(k_lin, a.ln1, P + w.k, bias(w.kb), N, C_, C_);
    cpu::matmul_fwd(a.v, a.ln1, P + w.v, bias(w.vb), N, C_, C_);
    if (qk_norm_) {  // parameter-free RMS norm of each head's q and k
      cpu::rmsnorm_fwd(a.q, a.q_rstd, a.q_raw, (const T*)nullptr, N * NH_, HS_);
      cpu::rmsnorm_fwd(a.k, a.k_rstd, a.k_raw, (const T*)nullptr, N * NH_, HS_);
    }
    if (rope_) {
      cpu::rope_fwd(a.q, B, Tn, NH_, HS_, cfg_.model.rope_theta);
      cpu::rope_fwd(a.k, B, Tn, NH_, HS_, cfg_.model.rope_theta);
    }
    cpu::attention_fwd(a.att, a.probs, a.q, a.k, a.v, B, Tn, NH_, HS_, att_scale_);
    cpu::matmul_fwd(a.res_mid, a.att, P + w.o, bias(w.ob), N, C_, C_);
    if (lip_) scale_in_place(a.res_mid, T(res_alpha_ / 3.0), NC);  // a * (att / 3) W_o^T
    cpu::axpy(a.res_mid, a.res_in, lip_ ? keep : T(1), NC);
    norm_fwd(a.ln2, a.ln2_mean, a.ln2_rstd, a.res_mid, w.ln2_w, w.ln2_b, P, N);
    T* out = l + 1 < L_ ? acts_[size_t(l) + 1].res_in : res_final_;
    if (CpuMoe<T>* moe = moe_[size_t(l)].get()) {
      moe->forward(P, a.ln2, out, N);
    } else {
      cpu::matmul_fwd(a.fc, a.ln2, P + w.fc, bias(w.fcb), N, C_, F_);
      if (gelu_) cpu::gelu_fwd(a.act, a.fc, int64_t(N) * F_);
      else cpu::relu2_fwd(a.act, a.fc, int64_t(N) * F_);
      if (lip_) scale_in_place(a.act, T(1.0 / kLipschitzGeluDivisor), int64_t(N) * F_);
      cpu::matmul_fwd(out, a.act, P + w.proj, bias(w.projb), N, F_, C_);
    }
    if (lip_) scale_in_place(out, T(res_alpha_), NC);
    cpu::axpy(out, a.res_mid, lip_ ? keep : T(1), NC);
  }
  norm_fwd(lnf_, lnf_mean_, lnf_rstd_, res_final_, lnf_w_, lnf_b_, P, N);
  cpu::matmul_fwd(logits_, lnf_, P + head_, (const T*)nullptr, N, C_, V_);
  if (softcap_ > 0) cpu::softcap_fwd(logits_, logits_, int64_t(N) * V_, softcap_);
}

template <typename T>
void CpuGpt<T>::backward(const T* P, T* G, double loss_scale) {
  const int B = B_, Tn = Tn_, N = B * Tn;
  const int64_t NC = int64_t(N) * C_, NF = int64_t(N) * F_;
  auto bias = [&](int64_t o) { return o >= 0 ? G + o : nullptr; };
  auto zero = [](T* p, int64_t n) { std::fill(p, p + n, T(0)); };
  const T keep = T(1.0 - res_alpha_);

  cpu::cross_entropy_bwd_lse(dlogits_, logits_, lse_, targets_.data(), N, V_, loss_scale / N);
  if (softcap_ > 0) cpu::softcap_bwd(dlogits_, dlogits_, logits_, int64_t(N) * V_, softcap_);
  zero(dln_, NC);
  cpu::matmul_bwd(dln_, G + head_, (T*)nullptr, dlogits_, lnf_, P + head_, N, C_, V_);
  zero(dres_, NC);
  norm_bwd(dres_, G, dln_, res_final_, lnf_w_, lnf_b_, P, lnf_mean_, lnf_rstd_, N);

  for (int l = L_ - 1; l >= 0; --l) {
    const Layer& w = layers_[size_t(l)];
    const LayerActs& a = acts_[size_t(l)];
    // MLP branch: dres holds d(block output); it also flows straight through to res_mid
    // (lipschitz: the branch gets a * dres, the stream (1 - a) * dres).
    const T* dbranch = dres_;
    if (lip_) {
      std::copy(dres_, dres_ + NC, dtmp_);
      scale_in_place(dtmp_, T(res_alpha_), NC);
      scale_in_place(dres_, keep, NC);
      dbranch = dtmp_;
    }
    zero(dln_, NC);
    if (CpuMoe<T>* moe = moe_[size_t(l)].get()) {
      moe->backward(P, G, dbranch, dln_, loss_scale);
    } else {
      zero(dact_, NF);
      cpu::matmul_bwd(dact_, G + w.proj, bias(w.projb), dbranch, a.act, P + w.proj, N, F_, C_);
      if (lip_) scale_in_place(dact_, T(1.0 / kLipschitzGeluDivisor), NF);
      zero(dfc_, NF);
      if (gelu_) cpu::gelu_bwd(dfc_, dact_, a.fc, NF);
      else cpu::relu2_bwd(dfc_, dact_, a.fc, NF);
      cpu::matmul_bwd(dln_, G + w.fc, bias(w.fcb), dfc_, a.ln2, P + w.fc, N, C_, F_);
    }
    norm_bwd(dres_, G, dln_, a.res_mid, w.ln2_w, w.ln2_b, P, a.ln2_mean, a.ln2_rstd, N);
    // Attention branch.
    zero(datt_, NC);
    dbranch = dres_;
    if (lip_) {
      std::copy(dres_, dres_ + NC, dtmp_);
      scale_in_place(dtmp_, T(res_alpha_ / 3.0), NC);
      scale_in_place(dres_, keep, NC);
      dbranch = dtmp_;
    }
    cpu::matmul_bwd(datt_, G + w.o, bias(w.ob), dbranch, a.att, P + w.o, N, C_, C_);
    zero(dq_, NC), zero(dk_, NC), zero(dv_, NC);
    cpu::attention_bwd(dq_, dk_, dv_, datt_, a.probs, a.q, a.k, a.v, B, Tn, NH_, HS_, att_scale_);
    if (rope_) {
      cpu::rope_bwd(dq_, B, Tn, NH_, HS_, cfg_.model.rope_theta);
      cpu::rope_bwd(dk_, B, Tn, NH_, HS_, cfg_.model.rope_theta);
    }
    if (qk_norm_) {  // d q_raw, d k_raw through the parameter-free per-head RMS norm
      zero(dtmp_, NC);
      cpu::rmsnorm_bwd(dtmp_, (T*)nullptr, dq_, a.q_raw, (const T*)nullptr, a.q_rstd, N * NH_, HS_);
      std::copy(dtmp_, dtmp_ + NC, dq_);
      zero(dtmp_, NC);
      cpu::rmsnorm_bwd(dtmp_, (T*)nullptr, dk_, a.k_raw, (const T*)nullptr, a.k_rstd, N * NH_, HS_);
      std::copy(dtmp_, dtmp_ + NC, dk_);
    }
    zero(dln_, NC);
    cpu::matmul_bwd(dln_, G + w.q, bias(w.qb), dq_, a.ln1, P + w.q, N, C_, C_);
    cpu::matmul_bwd(dln_, G + w.k, bias(w.kb), dk_, a.ln1, P + w.k, N, C_, C_);
    cpu::matmul_bwd(dln_, G + w.v, bias(w.vb), dv_, a.ln1, P + w.v, N, C_, C_);
    norm_bwd(dres_, G, dln_, a.res_in, w.ln1_w, w.ln1_b, P, a.ln1_mean, a.ln1_rstd, N);
  }
  cpu::embedding_bwd(G + wte_, wpe_ >= 0 ? G + wpe_ : nullptr, dres_, inputs_.data(), B, Tn, C_);
}

template <typename T>
double CpuGpt<T>::moe_objective() const {
  double sum = 0.0;
  for (const auto& b : moe_)
    if (b) sum += b->objective();
  return sum;
}

template <typename T>
std::vector<MoeLayerStats> CpuGpt<T>::moe_stats() const {
  std::vector<MoeLayerStats> out;
  for (const auto& b : moe_)
    if (b) out.push_back(b->stats());
  return out;
}

template class CpuGpt<float>;
template class CpuGpt<double>;

}  // namespace pg
