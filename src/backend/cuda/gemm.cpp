// cuBLASLt GEMMs with per-shape cached descriptors and algorithms (see gemm.hpp).
#include "backend/cuda/gemm.hpp"

#include <string>

#include "core/error.hpp"

namespace pg::cuda {

// The descriptors of one GEMM shape and the algorithm chosen for it, destroyed together.
struct GemmRunner::Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;  // cuBLASLt's A, B, C (= D)
  cublasLtMatmulAlgo_t algo{};
  ~Plan() {
    if (c) (void)cublasLtMatrixLayoutDestroy(c);
    if (b) (void)cublasLtMatrixLayoutDestroy(b);
    if (a) (void)cublasLtMatrixLayoutDestroy(a);
    if (op) (void)cublasLtMatmulDescDestroy(op);
  }
};

namespace {

// A column-major layout of rows x cols (ld = rows unless given), batched.
cublasLtMatrixLayout_t make_layout(cudaDataType_t type, int rows, int cols, int batch,
                                   int64_t stride, int ld = 0) {
  cublasLtMatrixLayout_t layout = nullptr;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout, type, uint64_t(rows), uint64_t(cols), int64_t(ld ? ld : rows)));
  if (batch > 1) {
    CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                  &batch, sizeof(batch)));
    CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
        layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
  }
  return layout;
}

cudaDataType_t data_type(InType t) {
  switch (t) {
    case InType::BF16: return CUDA_R_16BF;
    case InType::F16: return CUDA_R_16F;
    case InType::F32: return CUDA_R_32F;
  }
  return CUDA_R_16BF;
}
cudaDataType_t data_type(OutType t) {
  switch (t) {
    case OutType::F32: return CUDA_R_32F;
    case OutType::BF16: return CUDA_R_16BF;
    case OutType::F16: return CUDA_R_16F;
  }
  return CUDA_R_32F;
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

bool has_aux(Epilogue e) {
  return e == Epilogue::GeluAux || e == Epilogue::BiasGeluAux || e == Epilogue::DGelu || e == Epilogue::DGeluBiasGrad;
}
bool writes_bias_grad(Epilogue e) { return e == Epilogue::BiasGradA || e == Epilogue::DGeluBiasGrad; }

}  // namespace

GemmRunner::GemmRunner(cudaStream_t stream, size_t workspace_bytes)
    : stream_(stream), workspace_(workspace_bytes) {
  CUBLAS_CHECK(cublasLtCreate(&handle_));
}

GemmRunner::~GemmRunner() {
  plans_.clear();
  if (handle_) (void)cublasLtDestroy(handle_);
}

GemmRunner::Key GemmRunner::key_of(const GemmArgs& g) {
  return Key{g.M, g.N, g.K, g.trans_a, g.trans_b, int(g.in_type), int(g.out_type), int(g.epilogue), g.batch,
             g.stride_a, g.stride_b, g.stride_c, g.beta != 0.f, g.lda, g.ldb, g.ldc,
             g.batch > 1 ? g.stride_bias : 0, g.batch > 1 ? g.stride_aux : 0};
}

bool GemmRunner::supports(const GemmArgs& g) {
  const Key key = key_of(g);
  if (plans_.count(key)) return true;
  if (unsupported_.count(key)) return false;
  try {
    plan_for(g);
    return true;
  } catch (const std::exception&) {
    unsupported_[key] = true;
    return false;
  }
}

GemmRunner::Plan& GemmRunner::plan_for(const GemmArgs& g) {
  const Key key = key_of(g);
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;

  auto plan = std::make_unique<Plan>();
  const cudaDataType_t out = data_type(g.out_type);
  const cudaDataType_t in = data_type(g.in_type);
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  // Column-major view: D^T[N,M] = opB'(B^T) · opA'(A^T). Row-major B stored [K,N] is column-major
  // [N,K]: no transpose; stored [N,K] (trans_b) is column-major [K,N]: transpose. Likewise A.
  const cublasOperation_t op_first = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &op_first,
                                              sizeof(op_first)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &op_second,
                                              sizeof(op_second)));
  cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
  switch (g.epilogue) {
    case Epilogue::None: break;
    case Epilogue::Bias: epi = CUBLASLT_EPILOGUE_BIAS; break;
    case Epilogue::Gelu: epi = CUBLASLT_EPILOGUE_GELU; break;
    case Epilogue::BiasGelu: epi = CUBLASLT_EPILOGUE_GELU_BIAS; break;
    case Epilogue::GeluAux: epi = CUBLASLT_EPILOGUE_GELU_AUX; break;
    case Epilogue::BiasGeluAux: epi = CUBLASLT_EPILOGUE_GELU_AUX_BIAS; break;
    case Epilogue::DGelu: epi = CUBLASLT_EPILOGUE_DGELU; break;
    // cuBLASLt sees our A as its second operand (B), reduced over the shared dimension K.
    case Epilogue::BiasGradA: epi = CUBLASLT_EPILOGUE_BGRADB; break;
    // The bias gradient runs along cuBLASLt's rows of D (our columns), summed over our rows.
    case Epilogue::DGeluBiasGrad: epi = CUBLASLT_EPILOGUE_DGELU_BGRAD; break;
  }
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
  if (g.epilogue == Epilogue::Bias || g.epilogue == Epilogue::BiasGelu || g.epilogue == Epilogue::BiasGeluAux ||
      writes_bias_grad(g.epilogue)) {
    // A bias gradient is fp32 whatever the output (BiasGradA's output is fp32 anyway).
    const cudaDataType_t bias_type = writes_bias_grad(g.epilogue) ? CUDA_R_32F : out;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                &bias_type, sizeof(bias_type)));
    if (g.batch > 1 && g.stride_bias != 0)
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, &g.stride_bias,
                                                  sizeof(g.stride_bias)));
  }
  if (has_aux(g.epilogue)) {  // aux is laid out as the output: column-major [N, M], leading dim N
    const int64_t ld = g.N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof(ld)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE, &out,
                                                sizeof(out)));
    if (g.batch > 1)
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE,
                                                  &g.stride_aux, sizeof(g.stride_aux)));
  }
  // The stored shapes, column-major: first operand (our B) and second (our A).
  plan->a = g.trans_b ? make_layout(in, g.K, g.N, g.batch, g.stride_b, g.ldb)
                      : make_layout(in, g.N, g.K, g.batch, g.stride_b, g.ldb);
  plan->b = g.trans_a ? make_layout(in, g.M, g.K, g.batch, g.stride_a, g.lda)
                      : make_layout(in, g.K, g.M, g.batch, g.stride_a, g.lda);
  plan->c = make_layout(out, g.N, g.M, g.batch, g.stride_c, g.ldc);

  cublasLtMatmulPreference_t pref = nullptr;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = workspace_.bytes();
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                    &ws, sizeof(ws)));
  cublasLtMatmulHeuristicResult_t results[kTuneCandidates]{};
  int n_result = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle_, plan->op, plan->a, plan->b, plan->c, plan->c,
                                                           pref, autotune_ ? kTuneCandidates : 1, results, &n_result);
  (void)cublasLtMatmulPreferenceDestroy(pref);
  CUBLAS_CHECK(st);
  if (n_result == 0)
    throw std::runtime_error("cuBLASLt has no algorithm for GEMM M=" + std::to_string(g.M) +
                             " N=" + std::to_string(g.N) + " K=" + std::to_string(g.K));
  plan->algo = results[0].algo;
  if (autotune_ && n_result > 1) tune(*plan, g, results, n_result);
  return *plans_.emplace(key, std::move(plan)).first->second;
}

void GemmRunner::tune(Plan& plan, const GemmArgs& g, const cublasLtMatmulHeuristicResult_t* cands, int n_cand) {
  // An output the GEMM reads (beta != 0 without a separate C_in) is saved and restored.
  const bool accumulates = g.beta != 0.f && (g.C_in == nullptr || g.C_in == g.C);
  const size_t elem = g.out_type == OutType::F32 ? 4 : 2;
  const int64_t ldc = g.ldc ? g.ldc : g.N;
  const size_t c_bytes =
      elem * size_t(g.batch > 1 ? g.stride_c * (g.batch - 1) + int64_t(g.M) * ldc : int64_t(g.M) * ldc);
  void* saved = nullptr;
  if (accumulates) {
    if (cudaMallocAsync(&saved, c_bytes, stream_) != cudaSuccess) {
      (void)cudaGetLastError();
      return;  // no room to save the output: keep the heuristic's choice
    }
    CUDA_CHECK(cudaMemcpyAsync(saved, g.C, c_bytes, cudaMemcpyDeviceToDevice, stream_));
  }
  set_pointers(plan, g);
  Event start, stop;
  float best_ms = 0.f;
  int best = -1;
  for (int i = 0; i < n_cand; ++i) {
    if (cublasLtMatmul(handle_, plan.op, &g.alpha, g.B, plan.a, g.A, plan.b, &g.beta, g.C_in ? g.C_in : g.C, plan.c,
                       g.C, plan.c, &cands[i].algo, workspace_.data(), workspace_.bytes(), stream_) !=
        CUBLAS_STATUS_SUCCESS)
      continue;  // warm-up, and a candidate that cannot run is skipped
    start.record(stream_);
    for (int r = 0; r < kTuneRuns; ++r) run(plan, cands[i].algo, g);
    stop.record(stream_);
    stop.synchronize();
    const float ms = stop.elapsed_ms_since(start);
    if (best < 0 || ms < best_ms) best_ms = ms, best = i;
  }
  if (best >= 0) plan.algo = cands[best].algo;
  if (accumulates) {
    CUDA_CHECK(cudaMemcpyAsync(g.C, saved, c_bytes, cudaMemcpyDeviceToDevice, stream_));
    CUDA_CHECK(cudaFreeAsync(saved, stream_));
  }
}

void GemmRunner::set_pointers(Plan& plan, const GemmArgs& g) {
  if (writes_bias_grad(g.epilogue)) {
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias_grad,
                                                sizeof(g.bias_grad)));
  }
  if (has_aux(g.epilogue)) {
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &g.aux,
                                                sizeof(g.aux)));
  }
  if (g.epilogue == Epilogue::Bias || g.epilogue == Epilogue::BiasGelu || g.epilogue == Epilogue::BiasGeluAux) {
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias,
                                                sizeof(g.bias)));
  }
}

void GemmRunner::run(const Plan& plan, const cublasLtMatmulAlgo_t& algo, const GemmArgs& g) {
  const void* c_in = g.C_in ? g.C_in : g.C;
  CUBLAS_CHECK(cublasLtMatmul(handle_, plan.op, &g.alpha, g.B, plan.a, g.A, plan.b, &g.beta, c_in, plan.c, g.C,
                              plan.c, &algo, workspace_.data(), workspace_.bytes(), stream_));
}

void GemmRunner::gemm(const GemmArgs& g) {
  PG_CHECK(g.M > 0 && g.N > 0 && g.K > 0 && g.batch > 0, "gemm: empty shape");
  PG_CHECK(aligned16(g.A) && aligned16(g.B) && aligned16(g.C) && aligned16(g.C_in),
           "gemm: pointers must be 16-byte aligned");
  PG_CHECK(g.out_type == OutType::F32 || (g.in_type == InType::BF16 && g.out_type == OutType::BF16) ||
               (g.in_type == InType::F16 && g.out_type == OutType::F16),
           "gemm: output type must be F32 or the operands' type");
  PG_CHECK(g.epilogue == Epilogue::None || g.in_type == InType::BF16, "gemm: epilogues need bf16 operands");
  PG_CHECK(g.lda >= 0 && g.ldb >= 0 && g.ldc >= 0 && (g.ldc == 0 || g.ldc >= g.N) &&
               (g.lda == 0 || g.lda >= (g.trans_a ? g.M : g.K)) && (g.ldb == 0 || g.ldb >= (g.trans_b ? g.K : g.N)),
           "gemm: a leading dimension is smaller than the stored width");
  PG_CHECK(!has_aux(g.epilogue) || g.ldc == 0, "gemm: aux epilogues need a packed C");
  const bool has_bias =
      g.epilogue == Epilogue::Bias || g.epilogue == Epilogue::BiasGelu || g.epilogue == Epilogue::BiasGeluAux;
  PG_CHECK(!has_bias || g.bias != nullptr, "gemm: bias epilogue without a bias");
  PG_CHECK(!has_aux(g.epilogue) || (g.aux != nullptr && aligned16(g.aux) && g.N % 8 == 0 &&
                                     (g.batch == 1 || (g.stride_aux >= int64_t(g.M) * g.N && g.stride_aux % 8 == 0))),
           "gemm: GELU aux epilogue needs a 16-byte aligned aux, N % 8 == 0 and, with batches, an aux stride of at "
           "least M·N that is a multiple of 8");
  PG_CHECK(!has_bias || g.batch == 1 || g.stride_bias == 0 || (g.stride_bias >= g.N && g.stride_bias % 8 == 0),
           "gemm: a per-batch bias needs a stride of at least N that is a multiple of 8");
  PG_CHECK(g.epilogue != Epilogue::BiasGradA ||
               (g.bias_grad != nullptr && aligned16(g.bias_grad) && g.out_type == OutType::F32 &&
                (g.batch == 1 || (g.stride_bias >= g.M && g.stride_bias % 8 == 0))),
           "gemm: BiasGradA needs a 16-byte aligned bias_grad, fp32 output and, with batches, a bias stride of at "
           "least M that is a multiple of 8");
  PG_CHECK(g.epilogue != Epilogue::DGeluBiasGrad || (g.bias_grad != nullptr && aligned16(g.bias_grad) && g.batch == 1),
           "gemm: DGeluBiasGrad needs a 16-byte aligned bias_grad and one batch");
  Plan& plan = plan_for(g);
  set_pointers(plan, g);
  run(plan, plan.algo, g);
}

}  // namespace pg::cuda
