// One MoE block on the GPU (see cuda_moe.hpp); the step-by-step mirror of model/cpu_moe.cpp.
#include "model/cuda_moe.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cuda/arena_carver.hpp"
#include "backend/cuda/check.hpp"
#include "core/error.hpp"
#include "kernels/activation.cuh"
#include "kernels/bias.cuh"
#include "kernels/moe.cuh"

namespace pg {

namespace {

int capacity_for(double cf, int N, int k, int E) {
  if (cf <= 0) return N;
  const double c = std::ceil(cf * double(N) * k / E);
  return int(std::max(1.0, std::min(double(N), c)));
}

struct Dims {
  int64_t N, E, K, C, F, S, cap;
};
Dims dims_of(const Config& cfg, int max_rows) {
  Dims d;
  d.N = max_rows, d.E = cfg.moe.n_expert, d.K = cfg.moe.top_k, d.C = cfg.model.d_model;
  d.F = cfg.d_ff_expert(), d.S = cfg.moe.n_shared;
  d.cap = capacity_for(cfg.moe.capacity_factor, max_rows, cfg.moe.top_k, cfg.moe.n_expert);
  return d;
}

}  // namespace

void CudaMoe::PinnedFree::operator()(void* p) const {
  if (p) cudaFreeHost(p);
}

CudaMoe::CudaMoe(const Config& cfg, const ParamTable& t, int layer, int max_rows, cuda::GemmRunner& gemm,
                 cudaStream_t stream)
    : layer_(layer), E_(cfg.moe.n_expert), K_(cfg.moe.top_k), C_(cfg.model.d_model), F_(cfg.d_ff_expert()),
      S_(cfg.moe.n_shared), max_rows_(max_rows), gelu_(cfg.model.activation == "gelu"),
      capacity_factor_(cfg.moe.capacity_factor),
      aux_coef_(cfg.moe.balance == "aux" ? cfg.moe.aux_loss_coef : 0.0), z_coef_(cfg.moe.z_loss_coef),
      gemm_(gemm), stream_(stream) {
  if (C_ % 8 != 0 || F_ % 8 != 0 || E_ % 8 != 0)
    throw UserError("moe: the cuda backend needs model.d_model, moe.d_ff_expert and moe.n_expert to be multiples "
                    "of 8 (got " + std::to_string(C_) + ", " + std::to_string(F_) + ", " + std::to_string(E_) + ")");
  if (K_ < 1 || K_ > 8 || K_ > E_)
    throw UserError("moe.top_k: the cuda backend needs 1 to min(8, n_expert) (got " + std::to_string(K_) + ")");
  cap_max_ = capacity_for(capacity_factor_, max_rows, K_, E_);
  const std::string h = "h." + std::to_string(layer) + ".moe.";
  router_ = t.offset_of(h + "router.weight"), score_bias_ = t.offset_of(h + "router.score_bias");
  fc_ = t.offset_of(h + "experts.fc.weight"), fcb_ = t.offset_of(h + "experts.fc.bias");
  proj_ = t.offset_of(h + "experts.proj.weight"), projb_ = t.offset_of(h + "experts.proj.bias");
  sh_fc_ = t.offset_of(h + "shared.fc.weight"), sh_fcb_ = t.offset_of(h + "shared.fc.bias");
  sh_proj_ = t.offset_of(h + "shared.proj.weight"), sh_projb_ = t.offset_of(h + "shared.proj.bias");
  PG_CHECK(router_ >= 0 && fc_ >= 0 && proj_ >= 0,
           "parameter table lacks the MoE block of layer " + std::to_string(layer));
  PG_CHECK(S_ == 0 || (sh_fc_ >= 0 && sh_proj_ >= 0), "parameter table lacks the shared experts");
  void* host = nullptr;
  CUDA_CHECK(cudaMallocHost(&host, size_t(E_) * sizeof(int32_t) + 16 + 2 * sizeof(double)));
  host_.reset(static_cast<std::byte*>(host));
  std::memset(host, 0, size_t(E_) * sizeof(int32_t) + 16 + 2 * sizeof(double));
}

int CudaMoe::capacity(int N) const { return capacity_for(capacity_factor_, N, K_, E_); }

size_t CudaMoe::activation_bytes(const Config& cfg, int max_rows) {
  const Dims d = dims_of(cfg, max_rows);
  cuda::ArenaCarver a{nullptr};
  a.take<float>(d.N * d.E), a.take<float>(d.N), a.take<float>(d.N * d.K);
  a.take<int32_t>(d.N * d.K), a.take<int32_t>(d.N * d.K), a.take<int32_t>(d.E * d.cap), a.take<int32_t>(d.E);
  a.take<bf16>(d.E * d.cap * d.C), a.take<bf16>(d.E * d.cap * d.F), a.take<bf16>(d.E * d.cap * d.F);
  a.take<bf16>(d.E * d.cap * d.C), a.take<bf16>(d.S * d.N * d.F), a.take<bf16>(d.S * d.N * d.F);
  a.take<double>(2);
  return a.used + 256;
}

size_t CudaMoe::scratch_bytes(const Config& cfg, int max_rows) {
  const Dims d = dims_of(cfg, max_rows);
  const int64_t rows = d.E * d.cap, hrows = std::max(rows, d.N);
  cuda::ArenaCarver s{nullptr};
  s.take<float>(d.N * d.E), s.take<float>(d.N * d.K), s.take<float>(d.E * std::max(d.C, d.F));
  s.take<bf16>(d.N * d.E), s.take<bf16>(rows * d.C), s.take<bf16>(hrows * d.F), s.take<bf16>(hrows * d.F);
  s.take<bf16>(rows * d.C);
  s.take<int32_t>(kernels::moe_plan_scratch_ints(int(d.N), int(d.K), int(d.E)));
  s.take<double>(d.E);
  return s.used + 256;
}

void CudaMoe::bind(std::byte* acts, std::byte* scratch) {
  PG_CHECK((reinterpret_cast<uintptr_t>(acts) & 255) == 0 && (reinterpret_cast<uintptr_t>(scratch) & 255) == 0,
           "CudaMoe::bind: buffers must be 256-byte aligned");
  const int64_t N = max_rows_, E = E_, K = K_, C = C_, F = F_, S = S_, cap = cap_max_;
  cuda::ArenaCarver a{acts};
  probs_ = a.take<float>(N * E), lse_ = a.take<float>(N), gates_ = a.take<float>(N * K);
  sel_ = a.take<int32_t>(N * K), slot_ = a.take<int32_t>(N * K), row_src_ = a.take<int32_t>(E * cap);
  counts_ = a.take<int32_t>(E);
  xe_ = a.take<bf16>(E * cap * C), fc_act_ = a.take<bf16>(E * cap * F), act_ = a.take<bf16>(E * cap * F);
  eo_ = a.take<bf16>(E * cap * C), sh_fc_act_ = a.take<bf16>(S * N * F), sh_act_ = a.take<bf16>(S * N * F);
  losses_ = a.take<double>(2);
  const int64_t rows = E * cap, hrows = std::max(rows, N);
  cuda::ArenaCarver s{scratch};
  logits_ = s.take<float>(N * E), dgates_ = s.take<float>(N * K), bias_grad_ = s.take<float>(E * std::max(C, F));
  dlogits_ = s.take<bf16>(N * E), deo_ = s.take<bf16>(rows * C), dh1_ = s.take<bf16>(hrows * F);
  dh2_ = s.take<bf16>(hrows * F), dxe_ = s.take<bf16>(rows * C);
  plan_scratch_ = s.take<int32_t>(kernels::moe_plan_scratch_ints(int(N), int(K), int(E)));
  colsum_ = s.take<double>(E);
}

// out[N,OC] (= or, with beta = 1, +=) inp[N,IC] · w[OC,IC]^T (+ b).
void CudaMoe::linear_fwd(bf16* out, const bf16* inp, const bf16* w, const bf16* b, int N, int IC, int OC,
                         float beta) {
  cuda::GemmArgs g;
  g.M = N, g.N = OC, g.K = IC, g.A = inp, g.B = w, g.trans_b = true, g.C = out, g.out_type = cuda::OutType::BF16;
  g.beta = beta;
  if (b) g.epilogue = cuda::Epilogue::Bias, g.bias = b;
  gemm_.gemm(g);
}

// dinp[N,IC] (= or, with accumulate, +=) dout · w; dw += dout^T · inp; db += Σ_rows dout (db may be null).
void CudaMoe::linear_bwd(bf16* dinp, bool accumulate, float* dw, float* db, const bf16* dout, const bf16* inp,
                         const bf16* w, int N, int IC, int OC) {
  cuda::GemmArgs d;
  d.M = N, d.N = IC, d.K = OC, d.A = dout, d.B = w, d.C = dinp, d.out_type = cuda::OutType::BF16;
  d.beta = accumulate ? 1.f : 0.f;
  gemm_.gemm(d);
  cuda::GemmArgs g;
  g.M = OC, g.N = IC, g.K = N, g.A = dout, g.trans_a = true, g.B = inp, g.C = dw, g.beta = 1.f;
  if (db) g.epilogue = cuda::Epilogue::BiasGradA, g.bias_grad = bias_grad_;
  gemm_.gemm(g);
  if (db) kernels::bias_accumulate(db, bias_grad_, OC, stream_);
}

// The batched dW GEMM w (dW[e] += dout[e]^T · in[e]) and, with db, db[e] += Σ_rows dout[e] (dout
// [E·cap, OC]): the sums in the GEMM's bias-gradient epilogue (one per expert, into the scratch,
// then added), or by the per-expert bias kernel where that does not fuse.
void CudaMoe::expert_weight_grad(const cuda::GemmArgs& w, float* db, const bf16* dout, int OC) {
  if (!db) {
    gemm_.gemm(w);
    return;
  }
  cuda::GemmArgs wb = w;
  wb.epilogue = cuda::Epilogue::BiasGradA, wb.bias_grad = bias_grad_, wb.stride_bias = OC;
  if (fuse_ && gemm_.supports(wb)) {
    gemm_.gemm(wb);
    kernels::bias_accumulate(db, bias_grad_, E_ * OC, stream_);
  } else {
    gemm_.gemm(w);
    kernels::moe_expert_bias_bwd(db, dout, E_, cap_, OC, stream_);
  }
}

void CudaMoe::forward(const bf16* P, const bf16* x, bf16* y, int N) {
  PG_CHECK(N >= 1 && N <= max_rows_, "moe forward: more tokens than the arena holds");
  PG_CHECK(probs_ != nullptr, "moe forward before bind()");
  x_ = x, N_ = N, cap_ = capacity(N);
  const int E = E_, K = K_, C = C_, F = F_, cap = cap_;
  const int64_t rows = int64_t(E) * cap;
  auto par = [&](int64_t o) { return o >= 0 ? P + o : nullptr; };

  // Routing and the plan.
  cuda::GemmArgs r;
  r.M = N, r.N = E, r.K = C, r.A = x, r.B = P + router_, r.trans_b = true, r.C = logits_;
  r.out_type = cuda::OutType::F32;
  gemm_.gemm(r);
  kernels::moe_router_fwd(probs_, lse_, sel_, gates_, logits_, par(score_bias_), N, E, K, stream_);
  kernels::moe_dispatch_plan(slot_, row_src_, counts_, plan_scratch_, sel_, N, E, K, cap, stream_);
  kernels::moe_router_loss_fwd(losses_, colsum_, probs_, lse_, counts_, N, E, K, stream_);

  // Experts: one strided-batched GEMM per matmul over the padded blocks.
  kernels::moe_gather(xe_, x, row_src_, E, cap, K, C, stream_);
  // fc: with GELU, act = gelu(xe W1^T + b1) and the pre-activation fc in the epilogue (per-expert
  // bias and aux strides); else the bias in the epilogue and relu² as a pass. The kernels of the
  // unfused path serve when cuBLASLt cannot fuse the batched epilogue.
  cuda::GemmArgs f;
  f.M = cap, f.N = F, f.K = C, f.A = xe_, f.B = P + fc_, f.trans_b = true, f.C = fc_act_;
  f.out_type = cuda::OutType::BF16, f.batch = E;
  f.stride_a = int64_t(cap) * C, f.stride_b = int64_t(F) * C, f.stride_c = int64_t(cap) * F;
  cuda::GemmArgs ff = f;
  if (gelu_) ff.C = act_, ff.aux = fc_act_, ff.stride_aux = int64_t(cap) * F;
  ff.epilogue = gelu_ ? (fcb_ >= 0 ? cuda::Epilogue::BiasGeluAux : cuda::Epilogue::GeluAux)
                      : (fcb_ >= 0 ? cuda::Epilogue::Bias : cuda::Epilogue::None);
  if (fcb_ >= 0) ff.bias = P + fcb_, ff.stride_bias = F;
  fused_last_ = fuse_ && gemm_.supports(ff);
  if (fused_last_) {
    gemm_.gemm(ff);
    if (!gelu_) kernels::relu2_fwd(act_, fc_act_, rows * F, stream_);
  } else {
    gemm_.gemm(f);
    if (fcb_ >= 0) kernels::moe_expert_bias_fwd(fc_act_, P + fcb_, E, cap, F, stream_);
    if (gelu_) kernels::gelu_fwd(act_, fc_act_, rows * F, stream_);
    else kernels::relu2_fwd(act_, fc_act_, rows * F, stream_);
  }
  cuda::GemmArgs o;
  o.M = cap, o.N = C, o.K = F, o.A = act_, o.B = P + proj_, o.trans_b = true, o.C = eo_;
  o.out_type = cuda::OutType::BF16, o.batch = E;
  o.stride_a = int64_t(cap) * F, o.stride_b = int64_t(C) * F, o.stride_c = int64_t(cap) * C;
  cuda::GemmArgs ob = o;
  if (projb_ >= 0) ob.epilogue = cuda::Epilogue::Bias, ob.bias = P + projb_, ob.stride_bias = C;
  if (projb_ < 0) {
    gemm_.gemm(o);
  } else if (fuse_ && gemm_.supports(ob)) {
    gemm_.gemm(ob);
  } else {
    gemm_.gemm(o);
    kernels::moe_expert_bias_fwd(eo_, P + projb_, E, cap, C, stream_);
  }
  kernels::moe_combine_fwd(y, eo_, gates_, slot_, N, K, C, stream_);

  for (int s = 0; s < S_; ++s) {  // shared experts: dense MLPs over every token, added into y
    bf16* hf = sh_fc_act_ + int64_t(s) * N * F;
    bf16* ha = sh_act_ + int64_t(s) * N * F;
    linear_fwd(hf, x, P + sh_fc_ + int64_t(s) * F * C, sh_fcb_ >= 0 ? P + sh_fcb_ + int64_t(s) * F : nullptr, N, C,
               F, 0.f);
    if (gelu_) kernels::gelu_fwd(ha, hf, int64_t(N) * F, stream_);
    else kernels::relu2_fwd(ha, hf, int64_t(N) * F, stream_);
    linear_fwd(y, ha, P + sh_proj_ + int64_t(s) * C * F, sh_projb_ >= 0 ? P + sh_projb_ + int64_t(s) * C : nullptr,
               N, F, C, 1.f);
  }

  // The step's stats into pinned memory, read after the owner's next synchronisation.
  std::byte* h = host_.get();
  CUDA_CHECK(cudaMemcpyAsync(h, counts_, size_t(E) * sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaMemcpyAsync(h + ((size_t(E) * sizeof(int32_t) + 15) & ~size_t(15)), losses_, 2 * sizeof(double),
                             cudaMemcpyDeviceToHost, stream_));
}

void CudaMoe::backward(const bf16* P, float* G, const bf16* dy, bf16* dx, double loss_scale) {
  PG_CHECK(x_ != nullptr, "moe backward without a forward");
  const int N = N_, E = E_, K = K_, C = C_, F = F_, cap = cap_;
  const int64_t rows = int64_t(E) * cap;

  // Combine -> experts (batched over E) -> scatter into dx.
  kernels::moe_combine_bwd(deo_, dgates_, dy, eo_, gates_, row_src_, N, E, cap, K, C, stream_);
  {
    cuda::GemmArgs d;  // dh1[e] = deo[e] · W2[e]; with GELU, dh2 = dh1 ∘ gelu'(fc) in the epilogue
    d.M = cap, d.N = F, d.K = C, d.A = deo_, d.B = P + proj_, d.C = dh1_, d.out_type = cuda::OutType::BF16;
    d.batch = E, d.stride_a = int64_t(cap) * C, d.stride_b = int64_t(C) * F, d.stride_c = int64_t(cap) * F;
    cuda::GemmArgs dg = d;
    dg.C = dh2_, dg.epilogue = cuda::Epilogue::DGelu, dg.aux = fc_act_, dg.stride_aux = int64_t(cap) * F;
    if (gelu_ && fuse_ && gemm_.supports(dg)) {
      gemm_.gemm(dg);
    } else {
      gemm_.gemm(d);
      if (gelu_) kernels::gelu_bwd(dh2_, dh1_, fc_act_, rows * F, stream_);
      else kernels::relu2_bwd(dh2_, dh1_, fc_act_, rows * F, stream_);
    }
    cuda::GemmArgs w;  // dW2[e] += deo[e]^T · act[e]
    w.M = C, w.N = F, w.K = cap, w.A = deo_, w.trans_a = true, w.B = act_, w.C = G + proj_, w.beta = 1.f;
    w.batch = E, w.stride_a = int64_t(cap) * C, w.stride_b = int64_t(cap) * F, w.stride_c = int64_t(C) * F;
    expert_weight_grad(w, projb_ >= 0 ? G + projb_ : nullptr, deo_, C);
  }
  {
    cuda::GemmArgs d;  // dxe[e] = dh2[e] · W1[e]
    d.M = cap, d.N = C, d.K = F, d.A = dh2_, d.B = P + fc_, d.C = dxe_, d.out_type = cuda::OutType::BF16;
    d.batch = E, d.stride_a = int64_t(cap) * F, d.stride_b = int64_t(F) * C, d.stride_c = int64_t(cap) * C;
    gemm_.gemm(d);
    cuda::GemmArgs w;  // dW1[e] += dh2[e]^T · xe[e]
    w.M = F, w.N = C, w.K = cap, w.A = dh2_, w.trans_a = true, w.B = xe_, w.C = G + fc_, w.beta = 1.f;
    w.batch = E, w.stride_a = int64_t(cap) * F, w.stride_b = int64_t(cap) * C, w.stride_c = int64_t(F) * C;
    expert_weight_grad(w, fcb_ >= 0 ? G + fcb_ : nullptr, dh2_, F);
  }
  kernels::moe_scatter(dx, false, dxe_, slot_, N, K, C, stream_);

  for (int s = 0; s < S_; ++s) {
    const int64_t NF = int64_t(N) * F;
    linear_bwd(dh1_, false, G + sh_proj_ + int64_t(s) * C * F, sh_projb_ >= 0 ? G + sh_projb_ + int64_t(s) * C : nullptr,
               dy, sh_act_ + int64_t(s) * NF, P + sh_proj_ + int64_t(s) * C * F, N, F, C);
    if (gelu_) kernels::gelu_bwd(dh2_, dh1_, sh_fc_act_ + int64_t(s) * NF, NF, stream_);
    else kernels::relu2_bwd(dh2_, dh1_, sh_fc_act_ + int64_t(s) * NF, NF, stream_);
    linear_bwd(dx, true, G + sh_fc_ + int64_t(s) * F * C, sh_fcb_ >= 0 ? G + sh_fcb_ + int64_t(s) * F : nullptr, dh2_, x_,
               P + sh_fc_ + int64_t(s) * F * C, N, C, F);
  }

  // Router: through the gates and the two losses (one kernel), then the router GEMMs.
  kernels::moe_router_bwd(nullptr, dlogits_, dgates_, gates_, sel_, probs_, lse_, counts_, N, E, K,
                          loss_scale * aux_coef_, loss_scale * z_coef_, stream_);
  linear_bwd(dx, true, G + router_, nullptr, dlogits_, x_, P + router_, N, C, E);
  x_ = nullptr;
}

MoeLayerStats CudaMoe::stats() const {
  MoeLayerStats st;
  st.layer = layer_;
  st.load.assign(size_t(E_), 0);
  const std::byte* h = host_.get();
  std::vector<int32_t> counts(static_cast<size_t>(E_));
  std::memcpy(counts.data(), h, size_t(E_) * sizeof(int32_t));
  double losses[2];
  std::memcpy(losses, h + ((size_t(E_) * sizeof(int32_t) + 15) & ~size_t(15)), sizeof(losses));
  int64_t kept = 0;
  for (int e = 0; e < E_; ++e) {
    st.load[size_t(e)] = counts[size_t(e)];
    kept += std::min<int64_t>(counts[size_t(e)], cap_);
  }
  st.assignments = int64_t(N_) * K_;
  st.dropped = st.assignments - kept;
  st.aux = losses[0], st.z = losses[1];
  return st;
}

double CudaMoe::objective() const {
  const MoeLayerStats st = stats();
  return aux_coef_ * st.aux + z_coef_ * st.z;
}

}  // namespace pg
