// Spectral projections and monitor on the GPU (see cuda_constrain.hpp).
#include "spectral/cuda_constrain.hpp"

#include <algorithm>
#include <cstring>
#include <map>
#include <utility>

#include "core/error.hpp"
#include "kernels/adamw.cuh"
#include "spectral/constrain.hpp"
#include "spectral/matvec.hpp"
#include "spectral/monitor.hpp"
#include "spectral/projection.hpp"
#include "spectral/spectral_log.hpp"

namespace pg {

using kernels::OperandType;

// The slices of one [rows, cols] shape, with their device offsets, bounds and power-iteration
// scratch. Members are in table order, a tensor's slices consecutive.
struct CudaSpectral::Group {
  int rows = 0, cols = 0;
  bool gram = false;                         // hard cap by the Gram form
  int chunk = 1;                             // slices per batched chunk
  std::vector<int> param;                    // table index per slice
  std::vector<int64_t> slice;                // slice within its tensor
  std::vector<int64_t> offsets;              // into the flat buffer
  std::vector<double> bound;                 // sigma bound per slice
  std::vector<int> host_iters, next_iters;   // power iterations per slice: as last uploaded, this step's
  double eta_per_lr = 0;                     // soft cap: muon_update_spectral_bound at lr = 1
  size_t alpha_at = 0;                       // soft cap: this group's slot in the pinned staging
  cuda::DeviceBuffer<int64_t> d_offsets, d_work_offsets;
  cuda::DeviceBuffer<double> d_bound, d_alpha;
  cuda::DeviceBuffer<int> d_iters;
  cuda::DeviceBuffer<float> u_state, v_state;                    // [batch, rows], [batch, cols]
  cuda::DeviceBuffer<double> u, v, h, partial, sigma, tmp, v_cold;  // float64 power-iteration scratch

  int batch() const { return int(offsets.size()); }
  int m() const { return std::min(rows, cols); }
  int n() const { return std::max(rows, cols); }
};

namespace {

size_t operand_bytes(OperandType op) { return op == OperandType::F32 ? 4 : 2; }

cuda::InType in_type(OperandType op) {
  return op == OperandType::F32 ? cuda::InType::F32 : op == OperandType::F16 ? cuda::InType::F16 : cuda::InType::BF16;
}

OperandType parse_precision(const std::string& s) {
  switch (parse_ns_precision(s, "spectral.precision")) {
    case NsPrecision::fp32: return OperandType::F32;
    case NsPrecision::fp16: return OperandType::F16;
    case NsPrecision::bf16: return OperandType::BF16;
  }
  return OperandType::F32;
}

// Pinned host memory for the soft cap's per-step strengths (an async copy from pageable memory
// may synchronise the stream).
double* alloc_pinned(size_t n) {
  void* p = nullptr;
  CUDA_CHECK(cudaMallocHost(&p, std::max<size_t>(n, 1) * sizeof(double)));
  return static_cast<double*>(p);
}

template <typename T>
cuda::DeviceBuffer<T> upload_vec(const std::vector<T>& v) {
  return cuda::DeviceBuffer<T>(std::span<const T>(v));
}

}  // namespace

CudaSpectral::CudaSpectral(const Config& cfg, const ParamTable& table, cudaStream_t stream, int64_t max_work_elems)
    : cfg_(cfg), table_(with_constraints(cfg, table)), stream_(stream), gemm_(stream),
      op_(parse_precision(cfg.spectral.precision)),
      hardcap_sched_(ns_schedule_polar_express(kHardcapNsSteps, kHardcapEll, 1.02, 0.02)) {
  const SpectralConfig& s = cfg_.spectral;
  const auto& entries = table_.entries();
  warm_.assign(entries.size(), false);
  mirror_u_.resize(entries.size());
  mirror_v_.resize(entries.size());

  // Groups by [rows, cols] of the slices of the tensors `pick` selects.
  auto build = [&](auto pick, bool first_slice_only) {
    std::vector<std::unique_ptr<Group>> groups;
    std::map<std::pair<int, int>, Group*> by_shape;
    for (size_t i = 0; i < entries.size(); ++i) {
      const ParamInfo& p = entries[i];
      if (!pick(p)) continue;
      const int rows = int(p.rows()), cols = int(p.cols());
      Group*& g = by_shape[{rows, cols}];
      if (!g) {
        groups.push_back(std::make_unique<Group>());
        g = groups.back().get();
        g->rows = rows, g->cols = cols;
      }
      const int64_t slices = first_slice_only ? 1 : matrix_slices(p);
      for (int64_t k = 0; k < slices; ++k) {
        g->param.push_back(int(i));
        g->slice.push_back(k);
        g->offsets.push_back(p.offset + k * int64_t(rows) * cols);
        g->bound.push_back(sigma_bound(s, p.role, rows, cols));
      }
    }
    for (auto& g : groups) {
      const int B = g->batch(), rows = g->rows, cols = g->cols;
      g->chunk = int(std::clamp<int64_t>(max_work_elems / (int64_t(rows) * cols), 1, B));
      g->d_offsets = upload_vec(g->offsets);
      g->d_bound = upload_vec(g->bound);
      std::vector<int64_t> work(static_cast<size_t>(g->chunk));
      for (int b = 0; b < g->chunk; ++b) work[size_t(b)] = int64_t(b) * rows * cols;
      g->d_work_offsets = upload_vec(work);
      g->host_iters.assign(size_t(B), 0);
      g->next_iters.assign(size_t(B), 0);
      g->d_iters = cuda::DeviceBuffer<int>(size_t(B));
      g->u = cuda::DeviceBuffer<double>(size_t(B) * rows);
      g->v = cuda::DeviceBuffer<double>(size_t(B) * cols);
      g->h = cuda::DeviceBuffer<double>(size_t(B) * cols);
      g->partial = cuda::DeviceBuffer<double>(size_t(B) * kernels::matvec_chunks(rows) * cols);
      g->sigma = cuda::DeviceBuffer<double>(size_t(B));
      g->tmp = cuda::DeviceBuffer<double>(size_t(B));
    }
    return groups;
  };

  if (s.method != "none") proj_ = build([](const ParamInfo& p) { return p.constrained; }, false);
  if (s.monitor_every > 0)
    monitor_ = build([&](const ParamInfo& p) { return p.is_matrix() && monitor_matches(s.monitor_filter, p.name); },
                     false);
  if (cfg_.model.variant == "lipschitz")
    cert_ = build([](const ParamInfo& p) { return p.shape.size() == 2 && p.role != Role::embed && p.role != Role::pos_embed; },
                  true);

  // Per-group extras and the sizes of the shared work buffers.
  int64_t big = 1, small = 1, gram = 1, max_chunk = 1;
  size_t n_alpha = 0;
  auto account_ns = [&](const Group& g) {
    big = std::max(big, int64_t(g.chunk) * g.m() * g.n());
    small = std::max(small, int64_t(g.chunk) * g.m() * g.m());
    max_chunk = std::max<int64_t>(max_chunk, g.chunk);
  };
  for (auto& g : proj_) {
    const int rows = g->rows, cols = g->cols;
    if (s.method == "normalize" || s.method == "hammer") {
      g->u_state = cuda::DeviceBuffer<float>(size_t(g->batch()) * rows);
      g->v_state = cuda::DeviceBuffer<float>(size_t(g->batch()) * cols);
      g->u_state.zero(stream_), g->v_state.zero(stream_);
      std::vector<double> cold(static_cast<size_t>(cols));
      random_unit_vector(cold.data(), cols, 0x9e3779b9ull * rows + cols);  // power_iteration's start
      g->v_cold = upload_vec(cold);
    } else if (s.method == "softcap") {
      g->eta_per_lr = muon_update_spectral_bound(cfg_, rows, cols, 1.0);
      g->alpha_at = n_alpha;
      n_alpha += size_t(g->batch());
      g->d_alpha = cuda::DeviceBuffer<double>(size_t(g->batch()));
      account_ns(*g);
    } else if (s.method == "hardcap") {
      g->gram = std::max(rows, cols) >= kGramHardcapAspect * std::min(rows, cols);
      if (g->gram) {
        g->chunk = 1;
        big = std::max(big, int64_t(rows) * cols);
        gram = std::max(gram, int64_t(g->m()) * g->m());
        small = std::max(small, int64_t(g->m()) * g->m());
      } else {
        account_ns(*g);
      }
    }
  }
  for (auto& g : monitor_) {
    std::vector<double> start(static_cast<size_t>(g->cols));
    if (s.monitor_method == "power") {
      random_unit_vector(start.data(), g->cols, 0x51ed270b7ull * g->cols + g->rows);  // sigma_max_power's
    } else {
      random_unit_vector(start.data(), g->cols, 0x2545f4914f6cdd1dull + size_t(g->rows) * g->cols);  // polar_power's
      account_ns(*g);
    }
    g->v_cold = upload_vec(start);
  }
  for (auto& g : cert_) {
    std::vector<double> start(static_cast<size_t>(g->cols));
    random_unit_vector(start.data(), g->cols, 0x51ed270b7ull * g->cols + g->rows);
    g->v_cold = upload_vec(start);
  }
  const bool any_ns = big > 1 || small > 1;
  if (any_ns) {
    wt32_ = cuda::DeviceBuffer<float>(size_t(big));
    x32_ = cuda::DeviceBuffer<float>(size_t(big));
    t32_ = cuda::DeviceBuffer<float>(size_t(big));
    wop_ = cuda::DeviceBuffer<float>(size_t(big));
    xop_ = cuda::DeviceBuffer<float>(size_t(big));
    for (auto* b : {&a32_, &b32_, &y32_, &aop_, &bop_, &yop_}) *b = cuda::DeviceBuffer<float>(size_t(small));
  }
  if (gram > 1)
    for (auto& b : gram_) b = cuda::DeviceBuffer<float>(size_t(gram));
  sumsq_ = cuda::DeviceBuffer<double>(size_t(max_chunk));
  scalar_ = cuda::DeviceBuffer<double>(1);
  alpha_host_ = alloc_pinned(n_alpha);

  workspace_bytes_ = 5 * wt32_.bytes() + 6 * a32_.bytes() + 6 * gram_[0].bytes();
  for (auto* set : {&proj_, &monitor_, &cert_})
    for (auto& g : *set)
      workspace_bytes_ += g->u.bytes() + g->v.bytes() + g->h.bytes() + g->partial.bytes() + g->u_state.bytes() +
                          g->v_state.bytes();
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

CudaSpectral::~CudaSpectral() {
  if (alpha_host_) (void)cudaFreeHost(alpha_host_);
}

void CudaSpectral::gemm(int M, int N, int K, const void* A, bool ta, const void* B, bool tb, float* C, float alpha,
                        float beta, int batch, int64_t sa, int64_t sb, int64_t sc, OperandType in) {
  cuda::GemmArgs g;
  g.M = M, g.N = N, g.K = K, g.A = A, g.trans_a = ta, g.B = B, g.trans_b = tb, g.C = C;
  g.out_type = cuda::OutType::F32, g.in_type = in_type(in), g.alpha = alpha, g.beta = beta;
  g.batch = batch, g.stride_a = sa, g.stride_b = sb, g.stride_c = sc;
  gemm_.gemm(g);
}

// X <- NS(X) on [batch, m, n], m <= n, as newton_schulz_cpu: X /= ||X||_F + eps, then per step
// A = X X^T; B = c A A + b A; X = B X + a X. Products in `op` with fp32 accumulation and output;
// X, A, B kept in fp32 between products, their operand copies re-rounded after each.
void CudaSpectral::msign(float* X, void* X_op, OperandType op, int batch, int m, int n,
                         const std::vector<NsCoeffs>& schedule, double eps) {
  const int64_t mn = int64_t(m) * n, mm = int64_t(m) * m;
  kernels::spectral_sumsq(sumsq_.data(), X, batch, mn, stream_);
  kernels::spectral_ns_scale(X, X_op, op, sumsq_.data(), batch, mn, 1.0, eps, stream_);
  for (const NsCoeffs& k : schedule) {
    gemm(m, m, n, X_op, false, X_op, true, a32_.data(), 1.f, 0.f, batch, mn, mn, mm, op);
    if (k.c != 0.0) {
      kernels::spectral_cast(aop_.data(), op, a32_.data(), batch * mm, 1.f, b32_.data(), stream_);
      gemm(m, m, m, aop_.data(), false, aop_.data(), false, b32_.data(), float(k.c), float(k.b), batch, mm, mm, mm, op);
      kernels::spectral_cast(bop_.data(), op, b32_.data(), batch * mm, 1.f, nullptr, stream_);
    } else {
      kernels::spectral_cast(bop_.data(), op, a32_.data(), batch * mm, float(k.b), nullptr, stream_);
    }
    gemm(m, n, m, bop_.data(), false, X_op, false, X, 1.f, float(k.a), batch, mm, mn, mn, op);
    kernels::spectral_cast(X_op, op, X, batch * mn, 1.f, nullptr, stream_);
  }
}

void CudaSpectral::project(float* params, kernels::bf16* params_bf16, double lr, int64_t step) {
  const SpectralConfig& s = cfg_.spectral;
  if (cfg_.model.variant == "lipschitz")
    for (const auto& p : table_.entries())
      if (p.role == Role::embed || p.role == Role::pos_embed)
        kernels::max_norm_rows(params + p.offset, params_bf16 ? params_bf16 + p.offset : nullptr, p.rows(),
                               int(p.cols()), stream_);
  if (s.method == "none") return;
  if (s.method == "softcap") {
    // Strengths for this step (host), staged in pinned memory once the previous step's copies are done.
    if (alpha_pending_) alpha_copied_.synchronize();
    for (auto& g : proj_)
      for (int b = 0; b < g->batch(); ++b) {
        const ParamInfo& p = table_.at(g->param[size_t(b)]);
        const double w = g->bound[size_t(b)], wd = p.weight_decay ? cfg_.optim.weight_decay : 0.0;
        const double k = softcap_bound_k(w, lr, wd, g->eta_per_lr * lr);
        if (k > softcap_max_k(w))
          throw UserError("spectral.method = softcap: at step " + std::to_string(step) + " the update bound of " +
                          p.name + " exceeds what the soft cap can hold (k > 2.61 w_max); lower optim.lr or raise "
                          "spectral.w_max");
        alpha_host_[g->alpha_at + size_t(b)] = softcap_alpha(k, w);
      }
    for (auto& g : proj_)
      CUDA_CHECK(cudaMemcpyAsync(g->d_alpha.data(), alpha_host_ + g->alpha_at, g->d_alpha.bytes(),
                                 cudaMemcpyHostToDevice, stream_));
    alpha_copied_.record(stream_);
    alpha_pending_ = true;
  }
  for (auto& g : proj_) {
    if (s.method == "normalize" || s.method == "hammer") project_power(*g, params, params_bf16);
    else if (s.method == "softcap") project_softcap(*g, params, params_bf16);
    else if (g->gram) project_gram(*g, params, params_bf16);
    else project_hardcap(*g, params, params_bf16);
  }
}

// power_iteration per slice (warm start, cold-start iterations per tensor), then normalize / hammer.
void CudaSpectral::project_power(Group& g, float* params, kernels::bf16* params_bf16) {
  const SpectralConfig& s = cfg_.spectral;
  const int B = g.batch(), rows = g.rows, cols = g.cols;
  std::vector<int>& iters = g.next_iters;  // sized at construction: no allocation per step
  for (int b = 0; b < B; ++b) {
    const bool cold = !s.warm_start || !warm_[size_t(g.param[size_t(b)])];
    iters[size_t(b)] = s.power_iters + (cold ? kColdStartIters : 0);
  }
  if (iters != g.host_iters) {  // changes only after a cold start or upload_state
    CUDA_CHECK(cudaMemcpyAsync(g.d_iters.data(), iters.data(), size_t(B) * sizeof(int), cudaMemcpyHostToDevice,
                               stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));  // `iters` is pageable and rewritten next step
    g.host_iters = iters;
  }
  const int max_it = *std::max_element(iters.begin(), iters.end());
  const int chunks = kernels::matvec_chunks(rows);
  kernels::power_start(g.v.data(), s.warm_start ? g.v_state.data() : nullptr, g.v_cold.data(), B, cols, stream_);
  for (int it = 0; it < max_it; ++it) {
    const int* act = g.d_iters.data();
    kernels::matvec_rows(g.u.data(), params, g.d_offsets.data(), B, rows, cols, g.v.data(), act, it, stream_);
    kernels::vec_finish(g.u.data(), nullptr, 0, B, rows, nullptr, true, g.tmp.data(), false, act, it, stream_);
    kernels::matvec_cols(g.partial.data(), params, g.d_offsets.data(), B, rows, cols, g.u.data(), act, it, stream_);
    kernels::vec_finish(g.v.data(), g.partial.data(), chunks, B, cols, nullptr, true, g.sigma.data(), false, act, it,
                        stream_);
  }
  kernels::power_store(g.u_state.data(), g.v_state.data(), g.u.data(), g.v.data(), g.sigma.data(), B, rows, cols,
                       stream_);
  if (s.method == "normalize")
    kernels::spectral_normalize_batch(params, params_bf16, g.d_offsets.data(), B, int64_t(rows) * cols,
                                      g.sigma.data(), g.d_bound.data(), stream_);
  else
    kernels::spectral_hammer_batch(params, params_bf16, g.d_offsets.data(), B, rows, cols, g.u_state.data(),
                                   g.v_state.data(), g.sigma.data(), g.d_bound.data(), stream_);
  for (int p : g.param) warm_[size_t(p)] = true;
}

void CudaSpectral::project_softcap(Group& g, float* params, kernels::bf16* params_bf16) {
  const int m = g.m(), n = g.n();
  const int64_t mn = int64_t(m) * n, mm = int64_t(m) * m;
  for (int b0 = 0; b0 < g.batch(); b0 += g.chunk) {
    const int G = std::min(g.chunk, g.batch() - b0);
    kernels::spectral_gather(x32_.data(), xop_.data(), op_, params, g.d_offsets.data() + b0, G, g.rows, g.cols,
                             stream_);
    for (float sign : {-1.f, 1.f}) {  // M <- M -/+ a (M M^T) M
      gemm(m, m, n, xop_.data(), false, xop_.data(), true, a32_.data(), 1.f, 0.f, G, mn, mn, mm, op_);
      kernels::spectral_cast(aop_.data(), op_, a32_.data(), G * mm, 1.f, nullptr, stream_);
      gemm(m, n, m, aop_.data(), false, xop_.data(), false, t32_.data(), 1.f, 0.f, G, mm, mn, mn, op_);
      kernels::spectral_add_scaled(x32_.data(), xop_.data(), op_, t32_.data(), g.d_alpha.data() + b0, sign, G, mn,
                                   stream_);
    }
    kernels::spectral_scatter(params, params_bf16, g.d_offsets.data() + b0, G, g.rows, g.cols, x32_.data(), nullptr,
                              nullptr, 0.f, stream_);
  }
}

void CudaSpectral::project_hardcap(Group& g, float* params, kernels::bf16* params_bf16) {
  const int m = g.m(), n = g.n();
  const int64_t mn = int64_t(m) * n, mm = int64_t(m) * m;
  for (int b0 = 0; b0 < g.batch(); b0 += g.chunk) {
    const int G = std::min(g.chunk, g.batch() - b0);
    const double* beta = g.d_bound.data() + b0;
    kernels::spectral_gather(wt32_.data(), wop_.data(), op_, params, g.d_offsets.data() + b0, G, g.rows, g.cols,
                             stream_);
    CUDA_CHECK(cudaMemcpyAsync(x32_.data(), wt32_.data(), size_t(G * mn) * sizeof(float), cudaMemcpyDeviceToDevice,
                               stream_));
    msign(x32_.data(), xop_.data(), op_, G, m, n, hardcap_sched_, 1e-7);                             // O
    gemm(m, m, n, xop_.data(), false, wop_.data(), true, y32_.data(), 1.f, 0.f, G, mn, mn, mm, op_);  // O W^T
    kernels::spectral_beta_minus_sym(y32_.data(), beta, G, m, stream_);
    msign(y32_.data(), yop_.data(), op_, G, m, m, hardcap_sched_, 1e-7);                              // S
    kernels::spectral_beta_x_minus_w(x32_.data(), xop_.data(), op_, wt32_.data(), beta, G, mn, stream_);  // D
    gemm(m, n, m, yop_.data(), false, xop_.data(), false, t32_.data(), 1.f, 0.f, G, mm, mn, mn, op_);  // S D
    kernels::spectral_scatter(params, params_bf16, g.d_offsets.data() + b0, G, g.rows, g.cols, wt32_.data(),
                              x32_.data(), t32_.data(), 0.5f, stream_);
  }
}

// The Gram form (header), per slice, in fp32: M = I + 1/2 (beta Q - I)(I - msign(beta I - sym(Q G))).
void CudaSpectral::project_gram(Group& g, float* params, kernels::bf16* params_bf16) {
  const OperandType f32 = OperandType::F32;
  const int rows = g.rows, cols = g.cols;
  const bool tall = rows >= cols;
  const int k = tall ? cols : rows;
  const int64_t kk = int64_t(k) * k;
  for (int b = 0; b < g.batch(); ++b) {
    const float* W = params + g.offsets[size_t(b)];
    const float beta = float(g.bound[size_t(b)]);
    float *G = gram_[0].data(), *Q = gram_[1].data(), *R = gram_[2].data(), *P = gram_[3].data();
    float *R2 = gram_[4].data(), *T = gram_[5].data();
    if (tall) gemm(k, k, rows, W, true, W, false, G, 1.f, 0.f, 1, 0, 0, 0, f32);  // W^T W
    else gemm(k, k, cols, W, false, W, true, G, 1.f, 0.f, 1, 0, 0, 0, f32);       // W W^T
    kernels::spectral_inv_sqrt_trace(scalar_.data(), G, k, 1e-7, stream_);
    kernels::spectral_gram_start(Q, R, G, scalar_.data(), k, stream_);
    for (const NsCoeffs& c : hardcap_sched_) {
      gemm(k, k, k, R, false, R, false, R2, 1.f, 0.f, 1, 0, 0, 0, f32);  // R^2
      kernels::spectral_poly(P, R, R2, float(c.a), float(c.b), float(c.c), 1, k, stream_);
      gemm(k, k, k, Q, false, P, false, R2, 1.f, 0.f, 1, 0, 0, 0, f32);  // Q P
      std::swap(Q, R2);
      gemm(k, k, k, P, false, R, false, T, 1.f, 0.f, 1, 0, 0, 0, f32);  // P R
      gemm(k, k, k, T, false, P, false, R, 1.f, 0.f, 1, 0, 0, 0, f32);  // (P R) P
    }
    gemm(k, k, k, Q, false, G, false, y32_.data(), 1.f, 0.f, 1, 0, 0, 0, f32);  // Q G = O^T W
    kernels::spectral_beta_minus_sym(y32_.data(), g.d_bound.data() + b, 1, k, stream_);
    msign(y32_.data(), yop_.data(), f32, 1, k, k, hardcap_sched_, 1e-7);  // S'
    kernels::spectral_scale_add_identity(Q, beta, -1.f, 1, k, stream_);  // beta Q - I
    kernels::spectral_scale_add_identity(y32_.data(), -1.f, 1.f, 1, k, stream_);  // I - S'
    CUDA_CHECK(cudaMemsetAsync(R2, 0, size_t(kk) * sizeof(float), stream_));
    kernels::spectral_scale_add_identity(R2, 1.f, 1.f, 1, k, stream_);
    gemm(k, k, k, Q, false, y32_.data(), false, R2, 0.5f, 1.f, 1, 0, 0, 0, f32);  // M
    if (tall) gemm(rows, cols, cols, W, false, R2, false, t32_.data(), 1.f, 0.f, 1, 0, 0, 0, f32);  // W M
    else gemm(rows, cols, rows, R2, true, W, false, t32_.data(), 1.f, 0.f, 1, 0, 0, 0, f32);        // M^T W
    float* Wout = params + g.offsets[size_t(b)];
    CUDA_CHECK(cudaMemcpyAsync(Wout, t32_.data(), size_t(rows) * cols * sizeof(float), cudaMemcpyDeviceToDevice,
                               stream_));
    if (params_bf16)
      kernels::copy_to_bf16(params_bf16 + g.offsets[size_t(b)], Wout, int64_t(rows) * cols, stream_);
  }
}

// sigma_max_power on each slice: v <- W^T W v / ||.|| from a fixed start, sigma = ||W v||, the
// larger of the last two.
void CudaSpectral::sigma_power(Group& g, const float* params, int iters) {
  const int B = g.batch(), rows = g.rows, cols = g.cols, chunks = kernels::matvec_chunks(rows);
  kernels::power_start(g.v.data(), nullptr, g.v_cold.data(), B, cols, stream_);
  for (int it = 0; it < iters; ++it) {
    kernels::matvec_rows(g.u.data(), params, g.d_offsets.data(), B, rows, cols, g.v.data(), nullptr, 0, stream_);
    kernels::vec_finish(g.u.data(), nullptr, 0, B, rows, nullptr, false, g.sigma.data(), false, nullptr, 0, stream_);
    kernels::matvec_cols(g.partial.data(), params, g.d_offsets.data(), B, rows, cols, g.u.data(), nullptr, 0, stream_);
    kernels::vec_finish(g.v.data(), g.partial.data(), chunks, B, cols, nullptr, true, g.tmp.data(), false, nullptr, 0,
                        stream_);
  }
  kernels::matvec_rows(g.u.data(), params, g.d_offsets.data(), B, rows, cols, g.v.data(), nullptr, 0, stream_);
  kernels::vec_finish(g.u.data(), nullptr, 0, B, rows, nullptr, false, g.sigma.data(), true, nullptr, 0, stream_);
}

// The polar route (monitor.hpp): Q ~ msign(W) by NS on the oriented slices, then the Rayleigh
// quotient of H = Q^T W after power iteration on v -> Q^T (W v).
void CudaSpectral::sigma_polar(Group& g, const float* params) {
  const SpectralConfig& s = cfg_.spectral;
  const int rows = g.rows, cols = g.cols, m = g.m(), n = g.n();
  const bool tall = rows > cols;
  std::vector<NsCoeffs> sched;
  double eps = 1e-7;
  if (s.monitor_method == "ns5-fast") sched = ns_schedule_keller5(5);
  else sched.assign(size_t(ns3_accurate_steps(rows, cols)), NsCoeffs{1.5, -0.5, 0.0}), eps = 1e-30;
  for (int b0 = 0; b0 < g.batch(); b0 += g.chunk) {
    const int G = std::min(g.chunk, g.batch() - b0);
    const int64_t* offs = g.d_offsets.data() + b0;
    double *v = g.v.data() + int64_t(b0) * cols, *h = g.h.data() + int64_t(b0) * cols;
    double* w = g.u.data() + int64_t(b0) * rows;
    double* rq = g.sigma.data() + b0;
    kernels::spectral_gather(x32_.data(), xop_.data(), op_, params, offs, G, rows, cols, stream_);
    msign(x32_.data(), xop_.data(), op_, G, m, n, sched, eps);
    kernels::power_start(v, nullptr, g.v_cold.data(), G, cols, stream_);
    for (int it = 0; it < s.monitor_iters; ++it) {
      kernels::matvec_rows(w, params, offs, G, rows, cols, v, nullptr, 0, stream_);  // W v
      if (tall) {  // Q^T w = Qt w, Qt [cols, rows] in the work buffer
        kernels::matvec_rows(h, x32_.data(), g.d_work_offsets.data(), G, cols, rows, w, nullptr, 0, stream_);
        kernels::vec_finish(h, nullptr, 0, G, cols, v, true, rq, false, nullptr, 0, stream_);
      } else {
        kernels::matvec_cols(g.partial.data(), x32_.data(), g.d_work_offsets.data(), G, rows, cols, w, nullptr, 0,
                             stream_);
        kernels::vec_finish(h, g.partial.data(), kernels::matvec_chunks(rows), G, cols, v, true, rq, false, nullptr, 0,
                            stream_);
      }
      std::swap(v, h);
    }
  }
}

std::vector<double> CudaSpectral::download_sigmas(Group& g) {
  std::vector<double> out(static_cast<size_t>(g.batch()));
  CUDA_CHECK(cudaMemcpyAsync(out.data(), g.sigma.data(), out.size() * sizeof(double), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  return out;
}

std::vector<nlohmann::json> CudaSpectral::monitor_lines(const float* params, int64_t step) {
  const SpectralConfig& s = cfg_.spectral;
  PG_CHECK(s.monitor_every > 0, "CudaSpectral::monitor_lines: spectral.monitor_every is 0 (no monitor buffers)");
  std::map<std::pair<int, int64_t>, double> sigma;
  for (auto& g : monitor_) {
    if (s.monitor_method == "power") sigma_power(*g, params, s.monitor_iters);
    else sigma_polar(*g, params);
    const auto got = download_sigmas(*g);
    for (int b = 0; b < g->batch(); ++b) sigma[{g->param[size_t(b)], g->slice[size_t(b)]}] = got[size_t(b)];
  }
  const auto& entries = table_.entries();
  return spectral_monitor_lines(
      cfg_, table_, step,
      [&](const ParamInfo& p, int64_t slice) {
        const int idx = int(&p - entries.data());
        return sigma.at({idx, slice});
      },
      [&] { return certificate(params).to_json(); });
}

LipschitzCertificate CudaSpectral::certificate(const float* params) {
  std::map<std::string, double> sigma;
  for (auto& g : cert_) {
    sigma_power(*g, params, kCertificateIters);
    const auto got = download_sigmas(*g);
    for (int b = 0; b < g->batch(); ++b) sigma[table_.at(g->param[size_t(b)]).name] = got[size_t(b)];
  }
  return lipschitz_certificate(cfg_, table_, [&](const std::string& name) {
    const auto it = sigma.find(name);
    PG_CHECK(it != sigma.end(), "CudaSpectral::certificate: no measured matrix " + name);
    return it->second;
  });
}

std::vector<StateTensor> CudaSpectral::download_state() {
  std::vector<StateTensor> out;
  const std::string& method = cfg_.spectral.method;
  if (method != "normalize" && method != "hammer") return out;
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  for (auto& g : proj_) {
    for (int b = 0; b < g->batch();) {  // one tensor's slices are consecutive members
      const int p = g->param[size_t(b)];
      const ParamInfo& info = table_.at(p);
      const int64_t slices = matrix_slices(info);
      auto& mu = mirror_u_[size_t(p)];
      auto& mv = mirror_v_[size_t(p)];
      mu.resize(size_t(slices * info.rows()));
      mv.resize(size_t(slices * info.cols()));
      CUDA_CHECK(cudaMemcpy(mu.data(), g->u_state.data() + int64_t(b) * g->rows, mu.size() * sizeof(float),
                            cudaMemcpyDeviceToHost));
      CUDA_CHECK(cudaMemcpy(mv.data(), g->v_state.data() + int64_t(b) * g->cols, mv.size() * sizeof(float),
                            cudaMemcpyDeviceToHost));
      out.push_back({info.name + ".power_u", {slices, info.rows()}, mu.data(), int64_t(mu.size())});
      out.push_back({info.name + ".power_v", {slices, info.cols()}, mv.data(), int64_t(mv.size())});
      b += int(slices);
    }
  }
  return out;
}

void CudaSpectral::upload_state() {
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  for (auto& g : proj_) {
    for (int b = 0; b < g->batch();) {
      const int p = g->param[size_t(b)];
      const int64_t slices = matrix_slices(table_.at(p));
      const auto& mu = mirror_u_[size_t(p)];
      const auto& mv = mirror_v_[size_t(p)];
      if (!mu.empty() && !mv.empty()) {
        CUDA_CHECK(cudaMemcpy(g->u_state.data() + int64_t(b) * g->rows, mu.data(), mu.size() * sizeof(float),
                              cudaMemcpyHostToDevice));
        CUDA_CHECK(cudaMemcpy(g->v_state.data() + int64_t(b) * g->cols, mv.data(), mv.size() * sizeof(float),
                              cudaMemcpyHostToDevice));
        warm_[size_t(p)] = std::any_of(mv.begin(), mv.end(), [](float x) { return x != 0.0f; });
      }
      b += int(slices);
    }
  }
}

}  // namespace pg
