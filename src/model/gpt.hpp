// The GPT model plan, shared by every backend: which parameters exist (names, shapes, roles),
// how they are initialised, and the FLOP count used for MFU. Backends implement the forward and
// backward of this plan (cpu_gpt.hpp for the CPU reference).
//
// Block l (pre-norm):  h = norm1(x);  q,k,v = h W_q^T, h W_k^T, h W_v^T (+b);  [qk_norm]; [rope];
//                      x += attn(q,k,v) W_o^T (+b);  h = norm2(x);  x += act(h W_fc^T + b) W_proj^T (+b)
//   (MoE blocks, config moe: the MLP is replaced by a router over experts, model/cpu_moe.hpp;
//    h.<l>.moe.router.weight, h.<l>.moe.experts.{fc,proj}.weight [n_expert, ., .], ...)
// Head:                logits = norm_f(x) W_head^T   (W_head = wte when tie_embeddings)
//                      [soft cap: logits <- cap tanh(logits / cap)];  loss = mean cross-entropy
// Names follow one scheme: wte, wpe, h.<l>.ln_1.weight, h.<l>.attn.q.weight, ..., ln_f.weight,
// lm_head.weight. W_q, W_k, W_v are consecutive in the flat buffer, so a backend may run them
// as one fused [3C, C] GEMM.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "config/config.hpp"
#include "model/param_table.hpp"

namespace pg {

// Builds the table for cfg.model and marks which tensors Muon takes (optim.kind = muon:
// 2-D hidden matrices) and which are weight-decayed.
ParamTable build_gpt_params(const Config& cfg);

// GPT-2-style init: N(0, init_std) for matrices and embeddings, the residual output projections
// (attn.o and every *.proj, experts included) scaled by 1/sqrt(2 n_layer), biases 0, gains 1;
// model.variant = lipschitz draws the embeddings from N(0, 1) (rows of RMS ~1, then max-norm
// projected). Deterministic from seed.
void init_gpt_params(const Config& cfg, const ParamTable& table, std::span<float> params, uint64_t seed);

// Where each tensor of the plan sits in the flat buffer (element offsets; -1 = absent), looked
// up once by name so every backend walks the same plan. The head is wte when tied.
struct GptLayerOffsets {
  int64_t ln1_w = -1, ln1_b = -1, q = -1, k = -1, v = -1, qb = -1, kb = -1, vb = -1, o = -1, ob = -1;
  int64_t ln2_w = -1, ln2_b = -1, fc = -1, fcb = -1, proj = -1, projb = -1;
};
struct GptOffsets {
  int64_t wte = -1, wpe = -1, lnf_w = -1, lnf_b = -1, head = -1;
  std::vector<GptLayerOffsets> layers;
};
// logic_error when the table lacks a tensor the plan needs.
GptOffsets gpt_offsets(const Config& cfg, const ParamTable& table);

}  // namespace pg
