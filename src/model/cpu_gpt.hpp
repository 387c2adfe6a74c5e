// The CPU reference implementation of the GPT plan (model/gpt.hpp): forward and backward written
// by hand over pg::cpu ops, in fp32 for training and float64 for gradient checks (T = float |
// double). All activations live in one arena sized at construction for (max_batch, seq_len);
// forward and backward allocate nothing.
//
// Contract: backward() follows a forward() with targets, once (the logits buffer is reused for
// their gradient); parameters are read from `params`, gradients ACCUMULATE into `grads` (both
// laid out by the ParamTable), so gradient accumulation is repeated forward/backward pairs.
#pragma once
#include <cstdint>
#include <vector>

#include "config/config.hpp"
#include "model/gpt.hpp"
#include "model/param_table.hpp"

namespace pg {

template <typename T>
class CpuGpt {
 public:
  CpuGpt(const Config& cfg, const ParamTable& table, int max_batch);

  // inputs/targets: [B, Tn] token ids, Tn <= seq_len, B <= max_batch. With targets: returns the
  // mean cross-entropy (and the count of correct argmax predictions in *n_correct if given);
  // without targets (nullptr): computes only the logits and returns 0.
  double forward(const T* params, const int32_t* inputs, const int32_t* targets, int B, int Tn,
                 int64_t* n_correct = nullptr);
  // grads += d(loss_scale * mean loss)/d params.
  void backward(const T* params, T* grads, double loss_scale);

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

  void norm_fwd(T* out, T* mean, T* rstd, const T* inp, int64_t w, int64_t b, const T* P, int N);
  void norm_bwd(T* dinp, T* G, const T* dout, const T* inp, int64_t w, int64_t b, const T* P,
                const T* mean, const T* rstd, int N);

  Config cfg_;
  int max_batch_, L_, C_, F_, V_, NH_, HS_, S_;  // S_ = seq_len
  bool ln_, has_norm_, rope_, qk_norm_, gelu_, tied_;
  double softcap_;
  int64_t wte_ = -1, wpe_ = -1, lnf_w_ = -1, lnf_b_ = -1, head_ = -1;
  std::vector<Layer> layers_;

  std::vector<T> arena_;
  std::vector<LayerActs> acts_;
  T *res_final_, *lnf_, *lnf_mean_, *lnf_rstd_, *logits_, *dlogits_, *losses_;
  T *dres_, *dln_, *dq_, *dk_, *dv_, *dtmp_, *datt_, *dfc_, *dact_;
  std::vector<int32_t> inputs_, targets_;
  int B_ = 0, Tn_ = 0;
};

}  // namespace pg
