// Kernels of the spectral projections and the sigma_max monitor (src/spectral/cuda_constrain.hpp
// drives them; the math is in src/spectral/projection.hpp and ALGORITHMS.md sections 3-4).
// Test: tests/gpu/test_cuda_spectral.cpp.
//
// Layouts. A "batch" is `batch` matrices of one shape [rows, cols], row-major fp32, either
//   - in the flat parameter buffer: matrix b at base + offsets[b] (offsets: device int64 [batch]), or
//   - in a contiguous work buffer [batch, m, n], oriented wide (m = min(rows, cols), n = max):
//     a tall matrix (rows > cols) is stored transposed, so every Gram product is the small m x m.
// "Operand" buffers hold a copy of an fp32 work buffer in the GEMM operand type (fp32, fp16 or
// bf16, OperandType); they are allocated 4 bytes per element whatever the type.
// Power-iteration vectors and their sums are float64 (as the CPU's matvec.hpp); the stored
// warm-start vectors are fp32 [batch, rows] / [batch, cols].
//
// Grids: elementwise kernels are grid-stride (block 256); per-matrix reductions use one block of
// 256 per matrix; matvec_rows one warp per row (grid (ceil(rows/8), batch)); matvec_cols one
// thread per column over a chunk of kMatvecChunk rows (grid (ceil(cols/256), chunks, batch)),
// the chunks' partial sums added in order by vec_finish (deterministic).
#pragma once
#include <cuda_fp16.h>

#include "kernels/types.cuh"

namespace pg::kernels {

enum class OperandType { F32, F16, BF16 };

// ---- work buffers <-> parameters --------------------------------------------------------------
// out32[b] = W_b oriented wide (transposed when rows > cols); out_op (optional) = its operand copy.
void spectral_gather(float* out32, void* out_op, OperandType op, const float* params, const int64_t* offsets,
                     int batch, int rows, int cols, cudaStream_t stream);
// W_b <- orient^-1(X[b] + half (D[b] - SD[b]))  (D, SD null: W_b <- orient^-1(X[b])), in params and
// (when not null) params_bf16.
void spectral_scatter(float* params, bf16* params_bf16, const int64_t* offsets, int batch, int rows, int cols,
                      const float* X, const float* D, const float* SD, float half, cudaStream_t stream);

// ---- elementwise helpers over contiguous [batch, n] buffers ----------------------------------
// dst_op = cast(scale * src); copy32 (optional) = src.
void spectral_cast(void* dst_op, OperandType op, const float* src, int64_t n, float scale, float* copy32,
                   cudaStream_t stream);
// sumsq[b] = sum of X[b]^2 (float64), X [batch, n].
void spectral_sumsq(double* sumsq, const float* X, int batch, int64_t n, cudaStream_t stream);
// X[b] *= 1 / (sqrt(sumsq[b]) * safety + eps); X_op = cast(X)   (Newton-Schulz input scaling).
void spectral_ns_scale(float* X, void* X_op, OperandType op, const double* sumsq, int batch, int64_t n,
                       double safety, double eps, cudaStream_t stream);
// X[b] += sign * scale[b] * T[b]; X_op = cast(X).  scale: device double [batch].
void spectral_add_scaled(float* X, void* X_op, OperandType op, const float* T, const double* scale, float sign,
                         int batch, int64_t n, cudaStream_t stream);
// C[b] <- beta[b] I - (C[b] + C[b]^T) / 2, C [batch, m, m] (in place).
void spectral_beta_minus_sym(float* C, const double* beta, int batch, int m, cudaStream_t stream);
// X[b] <- beta[b] X[b] - W[b]; X_op = cast(X).
void spectral_beta_x_minus_w(float* X, void* X_op, OperandType op, const float* W, const double* beta, int batch,
                             int64_t n, cudaStream_t stream);
// X[b] <- diag_add I + scale X[b] for [batch, m, m] (scale, diag_add scalars).
void spectral_scale_add_identity(float* X, float scale, float diag_add, int batch, int m, cudaStream_t stream);
// P = a I + b R + c R2 for [batch, m, m].
void spectral_poly(float* P, const float* R, const float* R2, float a, float b, float c, int batch, int m,
                   cudaStream_t stream);
// s[0] = 1 / (sqrt(trace(G)) + eps) for one m x m G (a Frobenius norm from the Gram matrix).
void spectral_inv_sqrt_trace(double* s, const float* G, int m, double eps, cudaStream_t stream);
// X = s[0] I (m x m) and R = s[0]^2 G.
void spectral_gram_start(float* Q, float* R, const float* G, const double* s, int m, cudaStream_t stream);

// ---- power iteration (float64 vectors) -------------------------------------------------------
constexpr int kMatvecChunk = 128;
inline int matvec_chunks(int rows) { return (rows + kMatvecChunk - 1) / kMatvecChunk; }

// v[b] = use_state ? v_state[b] : 0, replaced by v_cold (one unit vector for the shape) when all zero.
void power_start(double* v, const float* v_state, const double* v_cold, int batch, int cols, cudaStream_t stream);
// y[b] = W_b x[b] (rows outputs). `iters`/`it`: matrix b is skipped when it >= iters[b] (iters null: never).
void matvec_rows(double* y, const float* base, const int64_t* offsets, int batch, int rows, int cols,
                 const double* x, const int* iters, int it, cudaStream_t stream);
// partial[b, chunk, j] = sum over the chunk's rows i of W_b[i, j] x[b][i]; finish with vec_finish.
void matvec_cols(double* partial, const float* base, const int64_t* offsets, int batch, int rows, int cols,
                 const double* x, const int* iters, int it, cudaStream_t stream);
// For each b (skipped as above): y[b] = sum of partial's n_chunks chunks (when partial is given);
// r = dot_with ? y . dot_with[b] : ||y||; y /= ||y|| when normalize and ||y|| > 0;
// out[b] = r (out_max: out[b] = max(out[b], r)).
void vec_finish(double* y, const double* partial, int n_chunks, int batch, int n, const double* dot_with,
                bool normalize, double* out, bool out_max, const int* iters, int it, cudaStream_t stream);
// u_state[b], v_state[b] = float(u[b]), float(v[b]) where sigma[b] > 0 (power_iteration's write-back).
void power_store(float* u_state, float* v_state, const double* u, const double* v, const double* sigma, int batch,
                 int rows, int cols, cudaStream_t stream);

// ---- the cheap projections, in place on the parameters (and their bf16 copy) ------------------
// normalize: W_b *= float(w[b] / sigma[b]) where sigma[b] > w[b].
void spectral_normalize_batch(float* params, bf16* params_bf16, const int64_t* offsets, int batch, int64_t n,
                              const double* sigma, const double* w, cudaStream_t stream);
// hammer: W_b[i, j] = float(W_b[i, j] + (w[b] - sigma[b]) u_b[i] v_b[j]) where sigma[b] > w[b].
void spectral_hammer_batch(float* params, bf16* params_bf16, const int64_t* offsets, int batch, int rows, int cols,
                           const float* u, const float* v, const double* sigma, const double* w, cudaStream_t stream);
// Rows of E [rows, cols] scaled to RMS <= 1 (model.variant = lipschitz's embedding max-norm).
void max_norm_rows(float* E, bf16* E_bf16, int64_t rows, int cols, cudaStream_t stream);

}  // namespace pg::kernels
