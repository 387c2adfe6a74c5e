// The CPU reference ops of a Mixture-of-Experts MLP: routing (softmax, top-k, renormalised gates),
// the two router losses, dispatch (tokens permuted into expert-contiguous rows, with capacity),
// grouped matmuls over the experts, and the gated combine. Each has its backward beside it.
// Templates for float (training) and double (gradient checks); same rules as ops.hpp: backwards
// ACCUMULATE (+=) into their outputs unless said otherwise, sums run in double, row loops run on
// the deterministic parallel_for, so results never depend on the thread count.
//
// Layouts: N tokens, E experts, k = top_k, C = d_model, F = expert hidden width, R = kept rows.
//   logits, probs [N,E]; lse [N]; sel, gates, slot [N,k] (token n's j-th choice at n*k + j);
//   expert rows [R, C]: rows of expert e are [begin[e], begin[e+1]), in priority order;
//   expert weights [E, OC, IC] (each expert its own row-major matrix), expert biases [E, OC].
//
// Source: moe.cpp.
#pragma once
#include <cstdint>

#include "backend/cpu/ops.hpp"

namespace pg::cpu {

// ---- routing ------------------------------------------------------------------------------------
// probs[n,:] = softmax(logits[n,:]); lse[n] = logsumexp(logits[n,:]);
// sel[n,:] = the k experts of largest score probs[n,e] + score_bias[e] (score_bias may be null:
// the aux-loss-free balancing bias steers selection only), best first, ties to the lower index;
// gates[n,j] = probs[n,sel_j] / Σ_i probs[n,sel_i]  (= softmax of the selected logits).
template <typename T>
void router_fwd(T* probs, T* lse, int32_t* sel, T* gates, const T* logits,
                Nullable<const T> score_bias, int N, int E, int k);
// Through the renormalised gates (the softmax of the selected logits):
//   dlogits[n,sel_j] += g_j·(dg_j − Σ_i g_i·dg_i); unselected logits get nothing.
template <typename T>
void router_gates_bwd(T* dlogits, const T* dgates, const T* gates, const int32_t* sel, int N, int E,
                      int k);
// Switch load-balancing loss with f_e = counts[e] / (N·k) (share of the routed assignments, taken
// before capacity drops, held constant in backward) and P_e = mean_n probs[n,e]:
//   aux = E · Σ_e f_e·P_e   (1 when routing is uniform).
template <typename T>
double router_aux_loss_fwd(const T* probs, const int64_t* counts, int N, int E, int k);
// dlogits[n,:] += scale · softmax-backward of dprobs[n,e] = E·f_e/N:  p ⊙ (dp − Σ_e p·dp).
template <typename T>
void router_aux_loss_bwd(T* dlogits, const T* probs, const int64_t* counts, int N, int E, int k,
                         double scale);
// Router z-loss: z = mean_n lse[n]²; backward dlogits[n,e] += scale · 2·lse[n]·probs[n,e] / N.
template <typename T>
double router_z_loss_fwd(const T* lse, int N);
template <typename T>
void router_z_loss_bwd(T* dlogits, const T* probs, const T* lse, int N, int E, double scale);

// ---- dispatch -----------------------------------------------------------------------------------
// Plans the permutation from sel[N,k]. counts[e] (E) = assignments that chose e; kept per expert
// = min(counts[e], capacity), assigned in priority order (all first choices by token order, then
// all second choices, ...); begin[E+1] = prefix sums of the kept counts; slot[n,j] = the row of
// token n's j-th choice, or -1 when dropped; row_token[r] = the token of row r. Returns R, the
// number of kept rows. Integer work only, O(N·k + E).
int64_t moe_dispatch_plan(int32_t* slot, int32_t* row_token, int64_t* begin, int64_t* counts,
                          const int32_t* sel, int N, int E, int k, int64_t capacity);
// xe[r,:] = x[row_token[r],:] for r < R (WRITES).
template <typename T>
void moe_gather(T* xe, const T* x, const int32_t* row_token, int64_t R, int C);
// The gather's backward: dx[n,:] += Σ_j dxe[slot[n,j],:] over kept slots, in j order.
template <typename T>
void moe_scatter_add(T* dx, const T* dxe, const int32_t* slot, int N, int k, int C);
// y[n,:] = Σ_j gates[n,j] · eo[slot[n,j],:] over kept slots (WRITES; a token with every choice
// dropped gets 0).
template <typename T>
void moe_combine_fwd(T* y, const T* eo, const T* gates, const int32_t* slot, int N, int k, int C);
// deo[slot[n,j],:] = gates[n,j]·dy[n,:];  dgates[n,j] = dy[n,:]·eo[slot[n,j],:], 0 when dropped.
// WRITES both (each kept row has exactly one source).
template <typename T>
void moe_combine_bwd(T* deo, T* dgates, const T* dy, const T* eo, const T* gates,
                     const int32_t* slot, int N, int k, int C);

// ---- grouped matmul -----------------------------------------------------------------------------
// For each group g: out[begin[g]:begin[g+1], OC] = inp[same rows, IC] · w[g]^T (+ bias[g]), with
// w [G, OC, IC] and bias [G, OC] (may be null). Empty groups are skipped.
template <typename T>
void grouped_matmul_fwd(T* out, const T* inp, const T* w, Nullable<const T> bias,
                        const int64_t* begin, int G, int IC, int OC);
// Per group, as matmul_bwd: dinp += dout·w[g]; dw[g] += dout^T·inp; dbias[g] += Σ_rows dout.
template <typename T>
void grouped_matmul_bwd(Nullable<T> dinp, Nullable<T> dw, Nullable<T> dbias, const T* dout,
                        const T* inp, const T* w, const int64_t* begin, int G, int IC, int OC);

}  // namespace pg::cpu
