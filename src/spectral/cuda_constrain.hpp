// The spectral projections and the sigma_max monitor on the GPU: the device twin of
// project_constrained (constrain.hpp), spectral_monitor_lines (spectral_log.hpp) and
// lipschitz_certificate (certificate.hpp), over the flat device fp32 master buffer.
// Kernels: kernels/spectral.cuh. Test: tests/gpu/test_cuda_spectral.cpp. Bench: bench/spectral_bench.cpp.
//
// Same semantics as the CPU (which matrices, bounds, roles, cold-start iterations, the soft cap's
// coupling, the embedding max-norm of model.variant = lipschitz), batched: the constrained [rows,
// cols] slices (each expert of a 3-D tensor is one) are grouped by shape, and each group runs as
// strided-batched GEMMs (polynomial iterations) or batched power iteration, in chunks of at most
// kMaxWorkElems elements so the work buffers stay bounded. Work buffers hold the slices oriented
// wide (m = min(rows, cols) <= n), so every Gram product is m x m. All buffers are allocated at
// construction; project() allocates nothing.
//   normalize, hammer  power iteration on the parameters in place (float64 vectors and sums, as
//              the CPU), vectors kept on the device between steps (warm start) and the
//              projection applied where sigma_hat > w, all on the device.
//   softcap    M <- M - a M M^T M, then M <- M + a M M^T M: the Gram product and G M in
//              spectral.precision, accumulated onto an fp32 M (so the master keeps fp32 accuracy;
//              the correction carries the operand rounding). a per slice from the host:
//              softcap_alpha(softcap_bound_k(w, lr, wd, muon_update_spectral_bound(...))).
//   hardcap    W <- 1/2 [beta O + W - S D], O = msign(W), S = msign(beta I - sym(O W^T)),
//              D = beta O - W; both msigns by Polar Express (10 steps, ell 1e-4, safety 1.02,
//              cushion 0.02) in spectral.precision with fp32 accumulation and fp32 X between steps.
//              Strongly rectangular slices (aspect >= kGramHardcapAspect, the LM head) take a Gram
//              form that never iterates on the long side, always in fp32 (derivation below).
// spectral.precision = fp32 reproduces the CPU up to float32 rounding; fp16/bf16 round the GEMM
// operands (tolerances measured in the test's header).
//
// Gram form of the hard cap (tall W [rows, k], k = cols <= rows / 8; the wide case transposed).
// The CPU diagonalises G = W^T W in float64 (gram_hardcap.hpp), which does not map to a GPU; here
// the matrix-sign formula is written in k x k terms. Newton-Schulz on a tall X multiplies on the
// right: X_{t+1} = X_t P_t, P_t = a + b R_t + c R_t^2 with R_t = X_t^T X_t. From X_0 = s W
// (s = 1/(||W||_F + 1e-7) = 1/(sqrt(tr G) + 1e-7)), every X_t = W Q_t with Q_t a polynomial in G:
//   Q_0 = s I, R_0 = s^2 G;   Q_{t+1} = Q_t P_t,  R_{t+1} = P_t R_t P_t      (all k x k)
// so O = W Q. Then O^T W = Q G (Q and G commute), D = W (beta Q - I), and S D = D S' with
// S' = msign(beta I - sym(Q G)) (k x k), which gives
//   hardcap(W) = W + 1/2 (D - D S') = W M,   M = I + 1/2 (beta Q - I)(I - S').
// Cost: G and W M (2 rows k^2 each) plus k^3 work, against ~10 products of rows k^2 for each msign
// on the long side. Where sigma < beta, I - S' vanishes, so M acts as I on those directions
// whatever the accuracy of Q there (squaring the spectrum in G loses the smallest singular
// values, which are exactly those left alone).
//
// Monitor (monitor_lines): same records as spectral_monitor_lines, sigma measured on the device:
// ns5-fast / ns3-accurate build Q by the same NS (in spectral.precision) on the oriented slices,
// then power-iterate v -> Q^T (W v) in float64; "power" iterates on W^T W. The Lipschitz
// certificate (certificate()) measures every 2-D weight matrix by the same device power iteration
// (kCertificateIters), downloads only the sigmas and combines them on the host.
//
// State for checkpoints (normalize, hammer): download_state() returns host mirrors named
// "<name>.power_u" [slices, rows] and "<name>.power_v" [slices, cols], as SpectralState's.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/cuda/device.hpp"
#include "backend/cuda/gemm.hpp"
#include "config/config.hpp"
#include "kernels/spectral.cuh"
#include "model/param_table.hpp"
#include "optim/newton_schulz.hpp"
#include "optim/optimizer.hpp"
#include "spectral/certificate.hpp"

namespace pg {

class CudaSpectral {
 public:
  // Largest work buffer (elements) one chunk of a shape group may use.
  static constexpr int64_t kMaxWorkElems = int64_t(1) << 25;

  // The table's constraint marks are recomputed from cfg (mark_constrained). cfg and the table
  // are copied. Work is enqueued on `stream`. max_work_elems bounds a chunk (tests lower it to
  // check the chunking).
  CudaSpectral(const Config& cfg, const ParamTable& table, cudaStream_t stream,
               int64_t max_work_elems = kMaxWorkElems);
  ~CudaSpectral();
  CudaSpectral(const CudaSpectral&) = delete;
  CudaSpectral& operator=(const CudaSpectral&) = delete;

  // After an optimizer step: project every constrained matrix of params (device fp32, laid out by
  // the table) and refresh params_bf16 (may be null) where it changed. lr: this step's learning
  // rate (the soft cap's coupling); step for messages. Enqueued on the stream without a host
  // sync, except once after construction or upload_state for normalize / hammer (the per-slice
  // iteration counts, cold or warm, are uploaded); the soft cap copies its per-slice strengths
  // from pinned memory, waiting only for the previous step's copy.
  void project(float* params, kernels::bf16* params_bf16, double lr, int64_t step);

  // Host mirrors of the power-iteration vectors (see above); download_state() synchronises.
  std::vector<StateTensor> download_state();
  void upload_state();

  // The spectral.jsonl records of one step (same as spectral_monitor_lines), from device params.
  // Needs spectral.monitor_every > 0 (the monitor's buffers are sized at construction). Synchronises.
  std::vector<nlohmann::json> monitor_lines(const float* params, int64_t step);
  // The Lipschitz certificate (model.variant = lipschitz), sigmas measured on the device. Synchronises.
  LipschitzCertificate certificate(const float* params);

  size_t workspace_bytes() const { return workspace_bytes_; }
  const ParamTable& table() const { return table_; }

 private:
  struct Group;
  void project_power(Group& g, float* params, kernels::bf16* params_bf16);
  void project_softcap(Group& g, float* params, kernels::bf16* params_bf16);
  void project_hardcap(Group& g, float* params, kernels::bf16* params_bf16);
  void project_gram(Group& g, float* params, kernels::bf16* params_bf16);
  // Newton-Schulz on X [batch, m, n] (m <= n) in place, operand copy in X_op.
  void msign(float* X, void* X_op, kernels::OperandType op, int batch, int m, int n,
             const std::vector<NsCoeffs>& schedule, double eps);
  // sigma_max_power on every slice of g (iters iterations) into g.sigma.
  void sigma_power(Group& g, const float* params, int iters);
  void sigma_polar(Group& g, const float* params);
  void gemm(int M, int N, int K, const void* A, bool ta, const void* B, bool tb, float* C, float alpha, float beta,
            int batch, int64_t sa, int64_t sb, int64_t sc, kernels::OperandType in);
  std::vector<double> download_sigmas(Group& g);

  Config cfg_;
  ParamTable table_;
  cudaStream_t stream_;
  cuda::GemmRunner gemm_;
  kernels::OperandType op_;
  std::vector<NsCoeffs> hardcap_sched_;
  std::vector<std::unique_ptr<Group>> proj_, monitor_, cert_;
  std::vector<bool> warm_;  // per table entry: its power vectors are not all zero

  // Shared work buffers: [chunk, m, n] (fp32 x3, operand x2), [chunk, m, m] (fp32 x3, operand x3),
  // k x k for the Gram form (x6).
  cuda::DeviceBuffer<float> wt32_, x32_, t32_, wop_, xop_;
  cuda::DeviceBuffer<float> a32_, b32_, y32_, aop_, bop_, yop_;
  cuda::DeviceBuffer<float> gram_[6];
  cuda::DeviceBuffer<double> sumsq_, scalar_;
  // Soft cap strengths: pinned host staging, copied to each group's device array per step.
  double* alpha_host_ = nullptr;
  cuda::Event alpha_copied_;
  bool alpha_pending_ = false;
  size_t workspace_bytes_ = 0;
  // Host mirror of the power vectors, per table entry (empty when the method keeps none).
  std::vector<std::vector<float>> mirror_u_, mirror_v_;
};

}  // namespace pg
