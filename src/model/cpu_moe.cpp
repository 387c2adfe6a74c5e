#include "model/cpu_moe.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "backend/cpu/moe_ops.hpp"
#include "backend/cpu/ops.hpp"
#include "core/error.hpp"

namespace pg {

template <typename T>
CpuMoe<T>::CpuMoe(const Config& cfg, const ParamTable& t, int layer, int max_rows)
    : E_(cfg.moe.n_expert), K_(cfg.moe.top_k), C_(cfg.model.d_model), F_(cfg.d_ff_expert()),
      S_(cfg.moe.n_shared), max_rows_(max_rows), gelu_(cfg.model.activation == "gelu"),
      capacity_factor_(cfg.moe.capacity_factor),
      aux_coef_(cfg.moe.balance == "aux" ? cfg.moe.aux_loss_coef : 0.0),
      z_coef_(cfg.moe.z_loss_coef) {
  const std::string h = "h." + std::to_string(layer) + ".moe.";
  auto off = [](const ParamTable& table, const std::string& name) { return table.offset_of(name); };
  router_ = off(t, h + "router.weight"), score_bias_ = off(t, h + "router.score_bias");
  fc_ = off(t, h + "experts.fc.weight"), fcb_ = off(t, h + "experts.fc.bias");
  proj_ = off(t, h + "experts.proj.weight"), projb_ = off(t, h + "experts.proj.bias");
  sh_fc_ = off(t, h + "shared.fc.weight"), sh_fcb_ = off(t, h + "shared.fc.bias");
  sh_proj_ = off(t, h + "shared.proj.weight"), sh_projb_ = off(t, h + "shared.proj.bias");
  PG_CHECK(router_ >= 0 && fc_ >= 0 && proj_ >= 0, "parameter table lacks the MoE block of layer " +
                                                       std::to_string(layer));
  PG_CHECK(S_ == 0 || (sh_fc_ >= 0 && sh_proj_ >= 0), "parameter table lacks the shared experts");
  const size_t NK = size_t(max_rows) * size_t(K_);
  sel_.resize(NK), slot_.resize(NK), row_token_.resize(NK), begin_.resize(size_t(E_) + 1);
  stats_.layer = layer;
  stats_.load.assign(size_t(E_), 0);
}

template <typename T>
int64_t CpuMoe<T>::activation_elems(const Config& cfg, int max_rows) {
  const int64_t N = max_rows, E = cfg.moe.n_expert, K = cfg.moe.top_k, C = cfg.model.d_model;
  const int64_t F = cfg.d_ff_expert(), S = cfg.moe.n_shared;
  return N * E + N + N * K + 2 * N * K * C + 2 * N * K * F + 2 * S * N * F;
}

template <typename T>
int64_t CpuMoe<T>::scratch_elems(const Config& cfg, int max_rows) {
  const int64_t N = max_rows, E = cfg.moe.n_expert, K = cfg.moe.top_k, C = cfg.model.d_model;
  const int64_t F = cfg.d_ff_expert();
  return N * E + N * K + 2 * N * K * C + 2 * std::max(N * K, N) * F + N * C;
}

template <typename T>
void CpuMoe<T>::bind(T* a, T* s) {
  const int64_t N = max_rows_, E = E_, K = K_, C = C_, F = F_, S = S_;
  auto take = [](T*& cur, int64_t n) { T* p = cur; cur += n; return p; };
  probs_ = take(a, N * E), lse_ = take(a, N), gates_ = take(a, N * K);
  xe_ = take(a, N * K * C), fc_act_ = take(a, N * K * F), act_ = take(a, N * K * F), eo_ = take(a, N * K * C);
  sh_fc_act_ = take(a, S * N * F), sh_act_ = take(a, S * N * F);
  dlogits_ = take(s, N * E), dgates_ = take(s, N * K), deo_ = take(s, N * K * C), dxe_ = take(s, N * K * C);
  dh1_ = take(s, std::max(N * K, N) * F), dh2_ = take(s, std::max(N * K, N) * F), tmp_ = take(s, N * C);
}

template <typename T>
void CpuMoe<T>::forward(const T* P, const T* x, T* y, int N) {
  PG_CHECK(N >= 1 && N <= max_rows_, "moe forward: more tokens than the arena holds");
  x_ = x, N_ = N;
  const int E = E_, K = K_, C = C_, F = F_;
  auto b = [&](int64_t o) { return o >= 0 ? P + o : nullptr; };
  auto activate = [&](T* out, const T* in, int64_t n) {
    if (gelu_) cpu::gelu_fwd(out, in, n);
    else cpu::relu2_fwd(out, in, n);
  };

  // Routing: the logits live in the scratch (only probs and lse are needed later).
  cpu::matmul_fwd(dlogits_, x, P + router_, nullptr, N, C, E);
  cpu::router_fwd(probs_, lse_, sel_.data(), gates_, dlogits_, b(score_bias_), N, E, K);
  const int64_t capacity =
      capacity_factor_ > 0 ? int64_t(std::ceil(capacity_factor_ * double(N) * K / E)) : int64_t(N);
  R_ = cpu::moe_dispatch_plan(slot_.data(), row_token_.data(), begin_.data(), stats_.load.data(),
                              sel_.data(), N, E, K, capacity);
  stats_.assignments = int64_t(N) * K;
  stats_.dropped = stats_.assignments - R_;
  stats_.aux = cpu::router_aux_loss_fwd(probs_, stats_.load.data(), N, E, K);
  stats_.z = cpu::router_z_loss_fwd(lse_, N);

  // Experts on their contiguous row blocks, then the gated combine.
  cpu::moe_gather(xe_, x, row_token_.data(), R_, C);
  cpu::grouped_matmul_fwd(fc_act_, xe_, P + fc_, b(fcb_), begin_.data(), E, C, F);
  activate(act_, fc_act_, R_ * F);
  cpu::grouped_matmul_fwd(eo_, act_, P + proj_, b(projb_), begin_.data(), E, F, C);
  cpu::moe_combine_fwd(y, eo_, gates_, slot_.data(), N, K, C);

  for (int s = 0; s < S_; ++s) {  // shared experts: dense MLPs over every token
    T* hf = sh_fc_act_ + int64_t(s) * N * F;
    T* ha = sh_act_ + int64_t(s) * N * F;
    cpu::matmul_fwd(hf, x, P + sh_fc_ + int64_t(s) * F * C, sh_fcb_ >= 0 ? P + sh_fcb_ + int64_t(s) * F : nullptr,
                    N, C, F);
    activate(ha, hf, int64_t(N) * F);
    cpu::matmul_fwd(tmp_, ha, P + sh_proj_ + int64_t(s) * C * F,
                    sh_projb_ >= 0 ? P + sh_projb_ + int64_t(s) * C : nullptr, N, F, C);
    cpu::axpy(y, tmp_, T(1), int64_t(N) * C);
  }
}

template <typename T>
void CpuMoe<T>::backward(const T* P, T* G, const T* dy, T* dx, double loss_scale) {
  const int N = N_, E = E_, K = K_, C = C_, F = F_;
  auto gb = [&](int64_t o) { return o >= 0 ? G + o : nullptr; };
  auto zero = [](T* p, int64_t n) { std::fill(p, p + n, T(0)); };
  auto activate_bwd = [&](T* din, const T* dout, const T* in, int64_t n) {
    if (gelu_) cpu::gelu_bwd(din, dout, in, n);
    else cpu::relu2_bwd(din, dout, in, n);
  };

  // Combine -> experts -> gather.
  cpu::moe_combine_bwd(deo_, dgates_, dy, eo_, gates_, slot_.data(), N, K, C);
  zero(dh1_, R_ * F);
  cpu::grouped_matmul_bwd(dh1_, G + proj_, gb(projb_), deo_, act_, P + proj_, begin_.data(), E, F, C);
  zero(dh2_, R_ * F);
  activate_bwd(dh2_, dh1_, fc_act_, R_ * F);
  zero(dxe_, R_ * C);
  cpu::grouped_matmul_bwd(dxe_, G + fc_, gb(fcb_), dh2_, xe_, P + fc_, begin_.data(), E, C, F);
  cpu::moe_scatter_add(dx, dxe_, slot_.data(), N, K, C);

  for (int s = 0; s < S_; ++s) {
    const int64_t NF = int64_t(N) * F;
    zero(dh1_, NF);
    cpu::matmul_bwd(dh1_, G + sh_proj_ + int64_t(s) * C * F, sh_projb_ >= 0 ? G + sh_projb_ + int64_t(s) * C : nullptr,
                    dy, sh_act_ + int64_t(s) * NF, P + sh_proj_ + int64_t(s) * C * F, N, F, C);
    zero(dh2_, NF);
    activate_bwd(dh2_, dh1_, sh_fc_act_ + int64_t(s) * NF, NF);
    cpu::matmul_bwd(dx, G + sh_fc_ + int64_t(s) * F * C, sh_fcb_ >= 0 ? G + sh_fcb_ + int64_t(s) * F : nullptr, dh2_,
                    x_, P + sh_fc_ + int64_t(s) * F * C, N, C, F);
  }

  // Router: through the gates, and the two losses; then the router matmul.
  zero(dlogits_, int64_t(N) * E);
  cpu::router_gates_bwd(dlogits_, dgates_, gates_, sel_.data(), N, E, K);
  if (aux_coef_ > 0)
    cpu::router_aux_loss_bwd(dlogits_, probs_, stats_.load.data(), N, E, K, loss_scale * aux_coef_);
  if (z_coef_ > 0) cpu::router_z_loss_bwd(dlogits_, probs_, lse_, N, E, loss_scale * z_coef_);
  cpu::matmul_bwd(dx, G + router_, nullptr, dlogits_, x_, P + router_, N, C, E);
}

template class CpuMoe<float>;
template class CpuMoe<double>;

}  // namespace pg
