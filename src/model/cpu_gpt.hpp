// The CPU reference implementation of the GPT plan (model/gpt.hpp): forward and backward written
// by hand over pg::cpu ops, in fp32 for training and float64 for gradient checks (T = float |
// double). All activations live in one arena sized at construction for (max_batch, seq_len);
// forward and backward allocate nothing.
//
// model.variant = lipschitz (docs/lipschitz.md) takes the same path with three changes: each
// sub-block is a convex residual x <- (1 - a) x + a block(x), a = 1 / (2 n_layer); the attention
// block is (attn(q, k, v) / 3) W_o^T with logits scaled by attn_scale / d_head; the MLP block is
// (gelu(x W_fc^T) / kLipschitzGeluDivisor) W_proj^T. Norms, biases, QK-norm and the soft cap are
// absent (the config requires it).
//
// Contract: backward() follows a forward() with targets, once (the logits buffer is reused for
// their gradient); parameters are read from `params`, gradients ACCUMULATE into `grads` (both
// laid out by the ParamTable), so gradient accumulation is repeated forward/backward pairs.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "config/config.hpp"
#include "model/cpu_moe.hpp"
#include "model/gpt.hpp"
#include "model/param_table.hpp"

namespace pg {

// Rounded-up maximum slope of the tanh-approximated GELU (1.1289931 at x = 1.4185): dividing by it
// makes the activation 1-Lipschitz.
inline constexpr double kLipschitzGeluDivisor = 1.129;

template <typename T>
class CpuGpt {
 public:
  CpuGpt(const Config& cfg, const ParamTable& table, int max_batch);

  // inputs/targets: [B, Tn] token ids, Tn <= seq_len, B <= max_batch. With targets: returns the
  // mean cross-entropy (and the count of correct argmax predictions in *n_correct if given);
  // without targets (nullptr): computes only the logits and returns 0.
  double forward(const T* params, const int32_t* inputs, const int32_t* targets, int B, int Tn,
                 int64_t* n_correct = nullptr);
  // The logits for given residual-stream inputs x[B, Tn, d_model] (what the embedding would
  // produce): the map whose Lipschitz constant the certificate bounds. No backward after it.
  void forward_from_embeddings(const T* params, const T* x, int B, int Tn);
  // grads += d(loss_scale * (mean loss + moe_objective()))/d params.
  void backward(const T* params, T* grads, double loss_scale);

  // MoE: the weighted router losses of the last forward (0 for a dense model), which the
  // training objective adds to forward()'s cross-entropy, and each MoE block's routing stats.
  double moe_objective() const;
  std::vector<MoeLayerStats> moe_stats() const;

  const T* logits() const { return logits_; }  // [B*Tn, vocab_size] of the last forward
  size_t arena_bytes() const { return arena_.size() * sizeof(T); }

 private:
  using Layer = GptLayerOffsets;
  struct LayerActs {
    T *res_in, *res_mid;               // residual stream entering the block / after attention
    T *ln1, *ln1_mean, *ln1_rstd;      // ln1 == res_in when norm = none
    T *q_raw, *k_raw, *q_rstd, *k_rstd;  // only with qk_norm
    T *q, *k, *v, *probs, *att;
    T *ln2, *ln2_mean, *ln2_rstd;
    T *fc, *act;
  };

  void blocks_fwd(const T* params, int B, int Tn);  // acts_[0].res_in -> logits_
  void norm_fwd(T* out, T* mean, T* rstd, const T* inp, int64_t w, int64_t b, const T* P, int N);
  void norm_bwd(T* dinp, T* G, const T* dout, const T* inp, int64_t w, int64_t b, const T* P,
                const T* mean, const T* rstd, int N);

  Config cfg_;
  int max_batch_, L_, C_, F_, V_, NH_, HS_, S_;  // S_ = seq_len
  bool ln_, has_norm_, rope_, qk_norm_, gelu_, tied_;
  double softcap_;
  bool lip_;             // model.variant = lipschitz
  double res_alpha_;     // lipschitz: convex-residual weight 1 / (2 n_layer)
  double att_scale_;     // attention logit scale
  int64_t wte_ = -1, wpe_ = -1, lnf_w_ = -1, lnf_b_ = -1, head_ = -1;
  std::vector<Layer> layers_;
  std::vector<std::unique_ptr<CpuMoe<T>>> moe_;  // per layer; null for a dense MLP

  std::vector<T> arena_;
  std::vector<LayerActs> acts_;
  T *res_final_, *lnf_, *lnf_mean_, *lnf_rstd_, *logits_, *dlogits_, *losses_;
  T* lse_;  // [B*Tn] row logsumexps of the last forward's logits, read by backward
  T *dres_, *dln_, *dq_, *dk_, *dv_, *dtmp_, *datt_, *dfc_, *dact_;
  std::vector<int32_t> inputs_, targets_;
  int B_ = 0, Tn_ = 0;
};

}  // namespace pg
