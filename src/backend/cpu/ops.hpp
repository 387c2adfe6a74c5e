// The CPU reference ops of a GPT, forward and backward written out by hand. Each is a template
// instantiated for float (the CPU trainer) and double (gradient checks).
//
// Layouts: every array is row-major and contiguous. B = batch, Tn = sequence length, C = channels,
// NH = heads, hs = head size (C = NH * hs), N = rows (usually B * Tn), V = vocabulary.
//
// Gradient rule: every backward ACCUMULATES (+=) into each gradient it outputs, parameter and
// input gradients alike, so that residual branches sum and the caller zeroes once per step. The
// exceptions write instead: softcap_bwd and cross_entropy_bwd (which may run in place), and
// rope_bwd (which rotates the gradient in place).
//
// Sums of many terms (norm statistics, dot products, softmax denominators, parameter-gradient
// reductions) are accumulated in double also for T = float. Row loops run on the deterministic
// parallel_for (parallel.hpp): results do not depend on the thread count.
//
// Sources: matmul.cpp, embedding.cpp, norm.cpp, elementwise.cpp, rope.cpp, attention.cpp, loss.cpp.
#pragma once
#include <cstdint>
#include <type_traits>

namespace pg::cpu {

// A pointer argument that may be null. Written this way it takes no part in deducing T, so a
// literal works: matmul_fwd(out, inp, w, nullptr, N, IC, OC). The parameter type is still T*.
template <typename T>
using Nullable = std::type_identity_t<T>*;

// ---- matmul.cpp ---------------------------------------------------------------------------------
// out[N,OC] = inp[N,IC] · w[OC,IC]^T (+ bias[OC]); bias may be null. GEMM through OpenBLAS.
template <typename T>
void matmul_fwd(T* out, const T* inp, const T* w, Nullable<const T> bias, int N, int IC, int OC);
// dinp[N,IC] += dout[N,OC] · w ; dw[OC,IC] += dout^T · inp ; dbias[OC] += Σ_rows dout.
// Any of dinp, dw, dbias may be null (not computed).
template <typename T>
void matmul_bwd(Nullable<T> dinp, Nullable<T> dw, Nullable<T> dbias, const T* dout, const T* inp,
                const T* w, int N, int IC, int OC);

// ---- embedding.cpp ------------------------------------------------------------------------------
// out[B,Tn,C] = wte[tokens[b,t], :] + wpe[t, :]; wte is [V,C], wpe is [>=Tn, C] and may be null.
template <typename T>
void embedding_fwd(T* out, const int32_t* tokens, const T* wte, Nullable<const T> wpe, int B,
                   int Tn, int C);
// dwte[tokens[b,t], :] += dout[b,t,:] ; dwpe[t,:] += Σ_b dout[b,t,:]. Either may be null.
template <typename T>
void embedding_bwd(Nullable<T> dwte, Nullable<T> dwpe, const T* dout, const int32_t* tokens, int B,
                   int Tn, int C);

// ---- norm.cpp -----------------------------------------------------------------------------------
// LayerNorm over the last dim of inp[N,C]:
//   mean = Σx/C, var = Σ(x-mean)²/C, rstd = 1/sqrt(var+eps), out = (x-mean)·rstd·gain + bias.
// Saves mean[N] and rstd[N] for backward. gain[C] is required; bias[C] may be null.
template <typename T>
void layernorm_fwd(T* out, T* mean, T* rstd, const T* inp, const T* gain, Nullable<const T> bias,
                   int N, int C, double eps = 1e-5);
// With xhat = (x-mean)·rstd and g = dout·gain, per row:
//   dinp += rstd·(g - mean(g) - xhat·mean(g·xhat)),
// and over all rows: dgain += Σ dout·xhat ; dbias += Σ dout. Any of dinp, dgain, dbias may be null.
template <typename T>
void layernorm_bwd(Nullable<T> dinp, Nullable<T> dgain, Nullable<T> dbias, const T* dout,
                   const T* inp, const T* gain, const T* mean, const T* rstd, int N, int C);
// RMSNorm over the last dim of inp[N,C]: rstd = 1/sqrt(mean(x²)+eps), out = x·rstd·gain; saves
// rstd[N]. gain may be null (gain = 1: the parameter-free QK-norm).
template <typename T>
void rmsnorm_fwd(T* out, T* rstd, const T* inp, Nullable<const T> gain, int N, int C,
                 double eps = 1e-6);
// With xhat = x·rstd and g = dout·gain, per row: dinp += rstd·(g - xhat·mean(g·xhat)), and over
// all rows: dgain += Σ dout·xhat. dinp may be null; dgain may be, and must be when gain is null.
template <typename T>
void rmsnorm_bwd(Nullable<T> dinp, Nullable<T> dgain, const T* dout, const T* inp,
                 Nullable<const T> gain, const T* rstd, int N, int C);

// ---- elementwise.cpp ----------------------------------------------------------------------------
// GELU, tanh approximation as in GPT-2: 0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³))).
template <typename T>
void gelu_fwd(T* out, const T* inp, int64_t n);
template <typename T>
void gelu_bwd(T* dinp, const T* dout, const T* inp, int64_t n);  // dinp += dout·gelu'(inp)
// ReLU²: max(x,0)²; derivative 2·max(x,0).
template <typename T>
void relu2_fwd(T* out, const T* inp, int64_t n);
template <typename T>
void relu2_bwd(T* dinp, const T* dout, const T* inp, int64_t n);  // dinp += dout·2·max(inp,0)
// Logit soft cap: out = cap·tanh(inp/cap). The backward uses the saved output:
// dinp = dout·(1 - (out/cap)²). It WRITES, and dinp may alias dout.
template <typename T>
void softcap_fwd(T* out, const T* inp, int64_t n, double cap);
template <typename T>
void softcap_bwd(T* dinp, const T* dout, const T* out, int64_t n, double cap);
// y += a·x
template <typename T>
void axpy(T* y, const T* x, T a, int64_t n);
// out = a + b (out may alias a or b)
template <typename T>
void add(T* out, const T* a, const T* b, int64_t n);

// ---- rope.cpp -----------------------------------------------------------------------------------
// Rotary position embedding, in place on x[B,Tn,NH,hs] (hs even): each pair (x_i, x_{i+hs/2}),
// i < hs/2, at position t is rotated by the angle t·theta^(-2i/hs):
//   (a, b) <- (a·cos - b·sin, a·sin + b·cos).
template <typename T>
void rope_fwd(T* x, int B, int Tn, int NH, int hs, double theta);
// The backward of a rotation is its transpose (the inverse rotation), applied in place to the
// gradient dx[B,Tn,NH,hs]: (da, db) <- (da·cos + db·sin, -da·sin + db·cos). Transforms, not +=.
template <typename T>
void rope_bwd(T* dx, int B, int Tn, int NH, int hs, double theta);

// ---- attention.cpp ------------------------------------------------------------------------------
// Causal softmax attention, materialising the probabilities (Tn is small on the CPU).
// q, k, v, out: [B,Tn,NH,hs] (that is [B,Tn,C]); probs: [B,NH,Tn,Tn], saved for backward:
//   probs[b,h,t,s] = softmax_{s<=t}(scale · q_t·k_s), zero for s > t ; out_t = Σ_s probs[t,s]·v_s.
template <typename T>
void attention_fwd(T* out, T* probs, const T* q, const T* k, const T* v, int B, int Tn, int NH,
                   int hs, double scale);
// With P = probs, dP[t,s] = dout_t·v_s and dA = P ⊙ (dP - rowsum(P ⊙ dP)):
//   dv_s += Σ_t P[t,s]·dout_t ; dq_t += scale·Σ_s dA[t,s]·k_s ; dk_s += scale·Σ_t dA[t,s]·q_t.
// Any of dq, dk, dv may be null.
template <typename T>
void attention_bwd(Nullable<T> dq, Nullable<T> dk, Nullable<T> dv, const T* dout, const T* probs,
                   const T* q, const T* k, const T* v, int B, int Tn, int NH, int hs, double scale);

// ---- loss.cpp -----------------------------------------------------------------------------------
// Cross entropy of logits[N,V] against targets[N] (each in [0, V)):
//   losses[n] = logsumexp(logits[n,:]) - logits[n, targets[n]]; returns the mean of losses.
// n_correct (may be null) receives the number of rows whose argmax (lowest index on ties) is the
// target. lse (may be null) receives each row's logsumexp, for cross_entropy_bwd_lse.
template <typename T>
double cross_entropy_fwd(T* losses, int64_t* n_correct, const T* logits, const int32_t* targets,
                         int N, int V, T* lse = nullptr);
// dlogits[n,:] = (softmax(logits[n,:]) - onehot(targets[n])) · dloss, where dloss is the gradient
// of the objective with respect to each row's loss (1/N for the mean). WRITES; dlogits may alias
// logits. The softmax is max-shifted with its denominator accumulated in double.
template <typename T>
void cross_entropy_bwd(T* dlogits, const T* logits, const int32_t* targets, int N, int V,
                       double dloss);
// The same from the row logsumexps that cross_entropy_fwd wrote (lse[N]): one pass and one exp per
// logit instead of recomputing the row maximum and sum (the trainer's backward, where the forward
// has just run on the same logits). WRITES; dlogits may alias logits.
template <typename T>
void cross_entropy_bwd_lse(T* dlogits, const T* logits, const T* lse, const int32_t* targets, int N,
                           int V, double dloss);

}  // namespace pg::cpu
