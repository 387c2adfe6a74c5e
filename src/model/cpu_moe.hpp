// The CPU reference of one Mixture-of-Experts MLP block (it replaces the dense MLP of the blocks
// the config marks MoE), forward and backward by hand over the ops of backend/cpu/moe_ops.hpp.
//
// For tokens x[N,C] (the block's normalised input):
//   logits = x W_r^T                        W_r [E, C]: h.<l>.moe.router.weight (AdamW)
//   p = softmax(logits); sel = top-k of p + b (b: h.<l>.moe.router.score_bias, balance = bias
//       only; selection only, no gradient); g_j = p_{sel_j} / Σ_i p_{sel_i}
//   dispatch: token n's j-th choice goes to row slot[n,j] of expert sel[n,j]'s block, unless
//       that expert is full (capacity = ceil(capacity_factor·N·k/E); 0 = dropless)
//   expert e: eo = act(xe W1[e]^T + b1[e]) W2[e]^T + b2[e]
//       W1 [E, F, C]: h.<l>.moe.experts.fc.weight, W2 [E, C, F]: h.<l>.moe.experts.proj.weight
//   y_n = Σ_{kept j} g_j · eo[slot[n,j]] + Σ_s shared_s(x_n)   (h.<l>.moe.shared.*, [S, F, C])
//   objective terms: aux_loss_coef · E Σ_e f_e P_e (balance = aux) + z_loss_coef · mean lse²
// The router learns from the language-model loss through the gates (so not at all with top_k = 1,
// whose single gate is 1: the aux and z losses still train it) and from the two losses.
//
// Memory: per-block activations and one scratch shared by all blocks, both carved by the owner
// (CpuGpt) out of its arena; integer routing state lives in vectors sized at construction.
#pragma once
#include <cstdint>
#include <vector>

#include "config/config.hpp"
#include "model/param_table.hpp"

namespace pg {

// What one MoE block did in the last forward: assignments per expert before capacity drops.
struct MoeLayerStats {
  int layer = 0;
  std::vector<int64_t> load;  // [E] tokens that chose each expert (a token counts once per choice)
  int64_t assignments = 0;    // N · top_k
  int64_t dropped = 0;        // assignments beyond an expert's capacity
  double aux = 0, z = 0;      // the two router losses (unweighted)
};

template <typename T>
class CpuMoe {
 public:
  CpuMoe(const Config& cfg, const ParamTable& table, int layer, int max_rows);
  // Elements of T this block needs for its activations, and the scratch all blocks may share.
  static int64_t activation_elems(const Config& cfg, int max_rows);
  static int64_t scratch_elems(const Config& cfg, int max_rows);
  void bind(T* activations, T* scratch);

  // y[N,C] = MoE(x[N,C]) (WRITES y). x is read again by backward, so it must stay unchanged.
  void forward(const T* P, const T* x, T* y, int N);
  // dx[N,C] += and G += the gradients of ⟨dy, y⟩ + loss_scale·(aux and z terms).
  void backward(const T* P, T* G, const T* dy, T* dx, double loss_scale);

  const MoeLayerStats& stats() const { return stats_; }
  // The weighted router losses this block adds to the objective (per the last forward).
  double objective() const { return aux_coef_ * stats_.aux + z_coef_ * stats_.z; }

 private:
  int E_, K_, C_, F_, S_, max_rows_;
  bool gelu_;
  double capacity_factor_, aux_coef_, z_coef_;
  int64_t router_ = -1, score_bias_ = -1, fc_ = -1, fcb_ = -1, proj_ = -1, projb_ = -1;
  int64_t sh_fc_ = -1, sh_fcb_ = -1, sh_proj_ = -1, sh_projb_ = -1;

  // Activations: probs [N,E], lse [N], gates [N,k], xe [N·k,C], fc/act [N·k,F], eo [N·k,C],
  // sh_fc/sh_act [S,N,F]. Scratch: logits/dlogits [N,E], dgates [N,k], deo/dxe [N·k,C],
  // dh1/dh2 [max(N·k, N), F], tmp [N,C].
  T *probs_, *lse_, *gates_, *xe_, *fc_act_, *act_, *eo_, *sh_fc_act_, *sh_act_;
  T *dlogits_, *dgates_, *deo_, *dxe_, *dh1_, *dh2_, *tmp_;
  std::vector<int32_t> sel_, slot_, row_token_;
  std::vector<int64_t> begin_;
  const T* x_ = nullptr;
  int N_ = 0;
  int64_t R_ = 0;
  MoeLayerStats stats_;
};

}  // namespace pg
