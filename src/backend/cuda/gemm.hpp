// The GEMM layer of the CUDA backend, over cuBLASLt: bf16 operands (fp16 and fp32 too, by
// in_type: Newton-Schulz, the spectral ops), fp32 accumulation, fp32 or bf16 output (fp16 with fp16 operands), optional bias (+GELU, with or without the pre-activation kept), GELU-gradient and
// bias-gradient epilogues, strided batches (whose epilogues may take a bias, an aux and a bias
// gradient per batch: the MoE expert GEMMs).
//
// Convention: ROW-MAJOR, as everywhere in polargpt.
//   C[M,N] = alpha · op(A) · op(B) (+ bias[N]) (-> gelu) + beta · C        for each batch b
//   op(A) is [M,K]: A is stored [M,K], or [K,M] when trans_a;
//   op(B) is [K,N]: B is stored [K,N], or [N,K] when trans_b.
// The linear layer out[N,OC] = inp[N,IC] · w[OC,IC]^T is gemm(M=N, N=OC, K=IC, A=inp, B=w,
// trans_b). cuBLASLt is column-major: a row-major X[r,c] is the column-major X^T, so we ask it
// for C^T = op(B)^T · op(A)^T, i.e. swap the operands; the bias then runs along its rows (our
// columns), which is what a linear layer's bias does.
//
// Operand types (in_type, both operands alike): BF16 (the default, every model GEMM) with F32 or
// BF16 output; F16 with F32 or F16 output; F32 with F32 output only. F32 is true fp32 on the
// CUDA cores (CUBLAS_COMPUTE_32F, never TF32): the fp32 Newton-Schulz reference precision and
// the spectral ops that need float32 products.
// C_in (optional) is the matrix beta scales when it is not C itself: C = alpha·op(A)·op(B) +
// beta·C_in, same type and layout as C (cuBLASLt's separate C and D); C_in may equal A or B.
//
// One GemmRunner per stream: it owns the cuBLASLt handle and workspace, and caches per shape the
// descriptors and the algorithm the heuristic picked, so the step loop does no descriptor set-up
// or heuristic query after the first step. Every pointer must be 16-byte aligned (the cached
// algorithms assume it); leading dimensions are the packed ones unless lda/ldb/ldc say otherwise.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "backend/cuda/device.hpp"
#include "kernels/types.cuh"

namespace pg::cuda {

using kernels::bf16;

enum class InType { BF16, F16, F32 };
enum class OutType { F32, BF16, F16 };
// GELU: the tanh approximation. *GeluAux also store the pre-activation (the GEMM + bias) in aux;
// DGelu multiplies the product by gelu'(aux) elementwise (the backward of a GELU whose input was
// stored by *GeluAux): C = (op(A)·op(B)) ∘ gelu'(aux).
// BiasGradA also WRITES bias_grad[m] = Σ_k op(A)[m,k] (fp32 output only): with A = dout stored
// [rows, OC] and trans_a, the dW GEMM of a linear layer yields its bias gradient on the way.
// DGeluBiasGrad is DGelu that also WRITES bias_grad[n] = Σ_m C[m,n] (fp32, one batch): the column
// sums of the GELU gradient it outputs, i.e. the bias gradient of the layer before the GELU.
// Not every cuBLASLt version fuses it with a bf16 output and an fp32 bias gradient: ask supports().
enum class Epilogue { None, Bias, Gelu, BiasGelu, GeluAux, BiasGeluAux, DGelu, BiasGradA, DGeluBiasGrad };

struct GemmArgs {
  int M = 0, N = 0, K = 0;
  const void* A = nullptr;  // of in_type
  bool trans_a = false;
  const void* B = nullptr;  // of in_type
  bool trans_b = false;
  void* C = nullptr;  // float*, bf16* or half*, per out_type; read when beta != 0 and C_in is null
  InType in_type = InType::BF16;
  OutType out_type = OutType::F32;
  const void* C_in = nullptr;  // when set, beta scales C_in instead of C (same type and layout)
  float alpha = 1.f, beta = 0.f;
  Epilogue epilogue = Epilogue::None;
  const void* bias = nullptr;  // [N], of the output's type, with Bias / BiasGelu / BiasGeluAux
  void* aux = nullptr;         // [M,N] row-major, of the output's type, with *GeluAux / DGelu
  float* bias_grad = nullptr;  // [M] with BiasGradA (batch b's at bias_grad + b·stride_bias), [N] with DGeluBiasGrad
  // Strided batches: matrix b of each operand starts at ptr + b·stride (elements); with batches,
  // batch b's bias (or bias gradient) starts at bias + b·stride_bias (0: one bias shared by all;
  // must be set for a bias gradient) and its aux at
  // aux + b·stride_aux (a multiple of 8; must be set when batch > 1 and the epilogue has an aux).
  int batch = 1;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0, stride_bias = 0, stride_aux = 0;
  // Row strides (elements) of the stored row-major A, B, C (C_in alike); 0 = packed (the stored
  // width). Set for sub-blocks of larger matrices (Newton-Schulz's symmetric products).
  int lda = 0, ldb = 0, ldc = 0;
};

class GemmRunner {
 public:
  explicit GemmRunner(cudaStream_t stream, size_t workspace_bytes = size_t(32) << 20);
  ~GemmRunner();
  GemmRunner(const GemmRunner&) = delete;
  GemmRunner& operator=(const GemmRunner&) = delete;

  void gemm(const GemmArgs& args);
  // Whether cuBLASLt has an algorithm for this shape and epilogue: plans it (cached; with
  // autotuning, timed on the call's operands, so pass the ones gemm() will get) when it has;
  // remembers the shapes it has not. For the epilogues of strided batches, which not every
  // cuBLASLt version can fuse.
  bool supports(const GemmArgs& args);
  cudaStream_t stream() const { return stream_; }
  size_t cached_plans() const { return plans_.size(); }
  // Autotuning, off by default: the first call of each shape then runs each of the heuristic's
  // first kTuneCandidates algorithms kTuneRuns times on the call's own operands (CUDA events,
  // synchronising the stream; an output that the GEMM accumulates into is saved and restored
  // around the trials) and caches the fastest instead of the heuristic's first choice. The pick
  // depends on timings, so two runs may choose differently (and round differently).
  void set_autotune(bool on) { autotune_ = on; }
  static constexpr int kTuneCandidates = 16, kTuneRuns = 5;

 private:
  struct Plan;
  using Key = std::tuple<int, int, int, bool, bool, int, int, int, int, int64_t, int64_t, int64_t, bool, int, int, int,
                         int64_t, int64_t>;
  static Key key_of(const GemmArgs& a);
  Plan& plan_for(const GemmArgs& a);
  void set_pointers(Plan& plan, const GemmArgs& g);
  void run(const Plan& plan, const cublasLtMatmulAlgo_t& algo, const GemmArgs& g);
  void tune(Plan& plan, const GemmArgs& g, const cublasLtMatmulHeuristicResult_t* cands, int n_cand);

  cudaStream_t stream_;
  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer<std::byte> workspace_;
  std::map<Key, std::unique_ptr<Plan>> plans_;
  bool autotune_ = false;
  std::map<Key, bool> unsupported_;
};

}  // namespace pg::cuda
