// Spectral projection and monitor kernels (math, layouts and grids: spectral.cuh).
#include <algorithm>
#include <cmath>

#include "backend/cuda/check.hpp"
#include "kernels/common.cuh"
#include "kernels/spectral.cuh"

namespace pg::kernels {
namespace {

constexpr int kBlock = 256;

__device__ __forceinline__ void store_op(void* dst, OperandType op, int64_t i, float x) {
  switch (op) {
    case OperandType::F32: static_cast<float*>(dst)[i] = x; break;
    case OperandType::F16: static_cast<__half*>(dst)[i] = __float2half_rn(x); break;
    case OperandType::BF16: static_cast<bf16*>(dst)[i] = __float2bfloat16_rn(x); break;
  }
}

// Sum over the block in fp64, fixed order (deterministic); every thread gets the total.
__device__ double block_sum_d(double v) {
  __shared__ double scratch[32];
  return block_sum(v, scratch);
}

// ---- gather / scatter: 32 x 32 tiles through shared memory, so the transposed side is coalesced.
__global__ void gather_kernel(float* out32, void* out_op, OperandType op, const float* params,
                              const int64_t* offsets, int rows, int cols) {
  __shared__ float tile[32][33];
  const int b = blockIdx.z, r0 = blockIdx.y * 32, c0 = blockIdx.x * 32;
  const float* W = params + offsets[b];
  const int64_t base = int64_t(b) * rows * cols;
  const bool tall = rows > cols;
  for (int k = threadIdx.y; k < 32; k += 8) {
    const int r = r0 + k, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[k][threadIdx.x] = W[int64_t(r) * cols + c];
  }
  __syncthreads();
  for (int k = threadIdx.y; k < 32; k += 8) {
    if (!tall) {
      const int r = r0 + k, c = c0 + threadIdx.x;
      if (r < rows && c < cols) {
        const int64_t i = base + int64_t(r) * cols + c;
        out32[i] = tile[k][threadIdx.x];
        if (out_op) store_op(out_op, op, i, tile[k][threadIdx.x]);
      }
    } else {  // out[c][r]: consecutive threads take consecutive r
      const int c = c0 + k, r = r0 + threadIdx.x;
      if (r < rows && c < cols) {
        const int64_t i = base + int64_t(c) * rows + r;
        out32[i] = tile[threadIdx.x][k];
        if (out_op) store_op(out_op, op, i, tile[threadIdx.x][k]);
      }
    }
  }
}

__global__ void scatter_kernel(float* params, bf16* params_bf16, const int64_t* offsets, int rows, int cols,
                               const float* X, const float* D, const float* SD, float half) {
  __shared__ float tile[32][33];
  const int b = blockIdx.z, r0 = blockIdx.y * 32, c0 = blockIdx.x * 32;
  float* W = params + offsets[b];
  const int64_t base = int64_t(b) * rows * cols;
  const bool tall = rows > cols;
  auto value = [&](int64_t i) { return D ? X[i] + half * (D[i] - SD[i]) : X[i]; };
  for (int k = threadIdx.y; k < 32; k += 8) {
    if (!tall) {
      const int r = r0 + k, c = c0 + threadIdx.x;
      if (r < rows && c < cols) tile[k][threadIdx.x] = value(base + int64_t(r) * cols + c);
    } else {
      const int c = c0 + k, r = r0 + threadIdx.x;
      if (r < rows && c < cols) tile[threadIdx.x][k] = value(base + int64_t(c) * rows + r);
    }
  }
  __syncthreads();
  for (int k = threadIdx.y; k < 32; k += 8) {
    const int r = r0 + k, c = c0 + threadIdx.x;
    if (r < rows && c < cols) {
      const int64_t i = int64_t(r) * cols + c;
      const float w = tile[k][threadIdx.x];
      W[i] = w;
      if (params_bf16) params_bf16[offsets[b] + i] = __float2bfloat16_rn(w);
    }
  }
}

__global__ void cast_kernel(void* dst, OperandType op, const float* src, int64_t n, float scale, float* copy32) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float x = src[i];
    store_op(dst, op, i, scale * x);
    if (copy32) copy32[i] = x;
  }
}

__global__ void sumsq_kernel(double* out, const float* X, int64_t n) {
  const float* x = X + int64_t(blockIdx.x) * n;
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kBlock) s += double(x[i]) * x[i];
  s = block_sum_d(s);
  if (threadIdx.x == 0) out[blockIdx.x] = s;
}

__global__ void ns_scale_kernel(float* X, void* X_op, OperandType op, const double* sumsq, int64_t n, double safety,
                                double eps) {
  const int b = blockIdx.y;
  const float s = float(1.0 / (sqrt(sumsq[b]) * safety + eps));
  const int64_t base = int64_t(b) * n;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float x = X[base + i] * s;
    X[base + i] = x;
    store_op(X_op, op, base + i, x);
  }
}

__global__ void add_scaled_kernel(float* X, void* X_op, OperandType op, const float* T, const double* scale,
                                  float sign, int64_t n) {
  const int b = blockIdx.y;
  const float s = sign * float(scale[b]);
  const int64_t base = int64_t(b) * n;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float x = X[base + i] + s * T[base + i];
    X[base + i] = x;
    store_op(X_op, op, base + i, x);
  }
}

__global__ void beta_minus_sym_kernel(float* C, const double* beta, int m) {
  const int b = blockIdx.y;
  float* c = C + int64_t(b) * m * m;
  const float bt = float(beta[b]);
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < int64_t(m) * m;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int i = int(e / m), j = int(e % m);
    if (i > j) continue;  // the thread of (j, i) writes both
    const float sym = -0.5f * (c[int64_t(i) * m + j] + c[int64_t(j) * m + i]);
    if (i == j) c[e] = sym + bt;
    else c[int64_t(i) * m + j] = c[int64_t(j) * m + i] = sym;
  }
}

__global__ void beta_x_minus_w_kernel(float* X, void* X_op, OperandType op, const float* W, const double* beta,
                                      int64_t n) {
  const int b = blockIdx.y;
  const float bt = float(beta[b]);
  const int64_t base = int64_t(b) * n;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float x = bt * X[base + i] - W[base + i];
    X[base + i] = x;
    store_op(X_op, op, base + i, x);
  }
}

__global__ void scale_add_identity_kernel(float* X, float scale, float diag_add, int batch, int m) {
  const int64_t total = int64_t(batch) * m * m;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = e % (int64_t(m) * m);
    const bool diag = k / m == k % m;
    X[e] = scale * X[e] + (diag ? diag_add : 0.f);
  }
}

__global__ void poly_kernel(float* P, const float* R, const float* R2, float a, float b, float c, int batch, int m) {
  const int64_t total = int64_t(batch) * m * m;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = e % (int64_t(m) * m);
    P[e] = b * R[e] + c * R2[e] + (k / m == k % m ? a : 0.f);
  }
}

__global__ void inv_sqrt_trace_kernel(double* s, const float* G, int m, double eps) {
  double t = 0.0;
  for (int i = threadIdx.x; i < m; i += kBlock) t += G[int64_t(i) * m + i];
  t = block_sum_d(t);
  if (threadIdx.x == 0) s[0] = 1.0 / (sqrt(fmax(t, 0.0)) + eps);
}

__global__ void gram_start_kernel(float* Q, float* R, const float* G, const double* s, int m) {
  const float sc = float(s[0]), sc2 = float(s[0] * s[0]);
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < int64_t(m) * m;
       e += int64_t(gridDim.x) * blockDim.x) {
    Q[e] = e / m == e % m ? sc : 0.f;
    R[e] = sc2 * G[e];
  }
}

// ---- power iteration ----
__global__ void power_start_kernel(double* v, const float* v_state, const double* v_cold, int cols) {
  const int b = blockIdx.x;
  double* vb = v + int64_t(b) * cols;
  double s = 0.0;
  for (int j = threadIdx.x; j < cols; j += kBlock) {
    const double x = v_state ? double(v_state[int64_t(b) * cols + j]) : 0.0;
    vb[j] = x;
    s += x * x;
  }
  s = block_sum_d(s);
  if (s == 0.0)
    for (int j = threadIdx.x; j < cols; j += kBlock) vb[j] = v_cold[j];
}

__global__ void matvec_rows_kernel(double* y, const float* base, const int64_t* offsets, int rows, int cols,
                                   const double* x, const int* iters, int it) {
  const int b = blockIdx.y;
  if (iters && it >= iters[b]) return;
  const int row = blockIdx.x * (kBlock / 32) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (row >= rows) return;
  const float* w = base + offsets[b] + int64_t(row) * cols;
  const double* xb = x + int64_t(b) * cols;
  double s = 0.0;
  for (int j = lane; j < cols; j += 32) s += double(w[j]) * xb[j];
  s = warp_sum(s);
  if (lane == 0) y[int64_t(b) * rows + row] = s;
}

__global__ void matvec_cols_kernel(double* partial, const float* base, const int64_t* offsets, int rows, int cols,
                                   const double* x, const int* iters, int it) {
  const int b = blockIdx.z, chunk = blockIdx.y;
  if (iters && it >= iters[b]) return;
  const int j = blockIdx.x * kBlock + threadIdx.x;
  if (j >= cols) return;
  const float* W = base + offsets[b];
  const double* xb = x + int64_t(b) * rows;
  const int i1 = min(rows, (chunk + 1) * kMatvecChunk);
  double s = 0.0;
  for (int i = chunk * kMatvecChunk; i < i1; ++i) s += double(W[int64_t(i) * cols + j]) * xb[i];
  partial[(int64_t(b) * gridDim.y + chunk) * cols + j] = s;
}

__global__ void vec_finish_kernel(double* y, const double* partial, int n_chunks, int n, const double* dot_with,
                                  bool normalize, double* out, bool out_max, const int* iters, int it) {
  const int b = blockIdx.x;
  if (iters && it >= iters[b]) return;
  double* yb = y + int64_t(b) * n;
  double ss = 0.0, dot = 0.0;
  for (int j = threadIdx.x; j < n; j += kBlock) {
    double v;
    if (partial) {
      v = 0.0;
      for (int c = 0; c < n_chunks; ++c) v += partial[(int64_t(b) * n_chunks + c) * n + j];
      yb[j] = v;
    } else {
      v = yb[j];
    }
    ss += v * v;
    if (dot_with) dot += v * dot_with[int64_t(b) * n + j];
  }
  ss = block_sum_d(ss);
  if (dot_with) dot = block_sum_d(dot);
  const double nrm = sqrt(ss);
  if (normalize && nrm > 0.0)
    for (int j = threadIdx.x; j < n; j += kBlock) yb[j] /= nrm;
  if (threadIdx.x == 0) {
    const double r = dot_with ? dot : nrm;
    out[b] = out_max ? fmax(out[b], r) : r;
  }
}

__global__ void power_store_kernel(float* u_state, float* v_state, const double* u, const double* v,
                                   const double* sigma, int batch, int rows, int cols) {
  const int64_t nu = int64_t(batch) * rows, nv = int64_t(batch) * cols;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < nu + nv; e += int64_t(gridDim.x) * blockDim.x) {
    if (e < nu) {
      if (sigma[e / rows] > 0.0) u_state[e] = float(u[e]);
    } else {
      const int64_t k = e - nu;
      if (sigma[k / cols] > 0.0) v_state[k] = float(v[k]);
    }
  }
}

__global__ void normalize_batch_kernel(float* params, bf16* params_bf16, const int64_t* offsets, int64_t n,
                                       const double* sigma, const double* w) {
  const int b = blockIdx.y;
  if (!(sigma[b] > w[b])) return;
  const float s = float(w[b] / sigma[b]);
  float* W = params + offsets[b];
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float x = W[i] * s;
    W[i] = x;
    if (params_bf16) params_bf16[offsets[b] + i] = __float2bfloat16_rn(x);
  }
}

__global__ void hammer_batch_kernel(float* params, bf16* params_bf16, const int64_t* offsets, int rows, int cols,
                                    const float* u, const float* v, const double* sigma, const double* w) {
  const int b = blockIdx.y;
  if (!(sigma[b] > w[b])) return;
  const double d = w[b] - sigma[b];
  float* W = params + offsets[b];
  const float* ub = u + int64_t(b) * rows;
  const float* vb = v + int64_t(b) * cols;
  const int64_t n = int64_t(rows) * cols;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const double du = d * ub[e / cols];
    const float x = float(W[e] + du * vb[e % cols]);
    W[e] = x;
    if (params_bf16) params_bf16[offsets[b] + e] = __float2bfloat16_rn(x);
  }
}

__global__ void max_norm_rows_kernel(float* E, bf16* E_bf16, int64_t rows, int cols) {
  const int64_t row = int64_t(blockIdx.x) * (kBlock / 32) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  float* e = E + row * cols;
  double ss = 0.0;
  for (int j = lane; j < cols; j += 32) ss += double(e[j]) * e[j];
  ss = warp_sum(ss);
  const double rms = sqrt(ss / double(cols));
  const float s = rms > 1.0 ? float(1.0 / rms) : 1.f;
  for (int j = lane; j < cols; j += 32) {
    const float x = rms > 1.0 ? e[j] * s : e[j];
    e[j] = x;
    if (E_bf16) E_bf16[row * cols + j] = __float2bfloat16_rn(x);
  }
}

// Blocks per matrix for a per-matrix grid-stride loop over n elements of `batch` matrices.
unsigned per_matrix_blocks(int64_t n, int batch) {
  const int64_t want = (n + kBlock - 1) / kBlock;
  const int64_t cap = std::max<int64_t>(1, 132 * 16 / std::max(batch, 1));
  return unsigned(std::max<int64_t>(1, std::min(want, cap)));
}

dim3 tile_grid(int rows, int cols, int batch) { return dim3((cols + 31) / 32, (rows + 31) / 32, batch); }

}  // namespace

void spectral_gather(float* out32, void* out_op, OperandType op, const float* params, const int64_t* offsets,
                     int batch, int rows, int cols, cudaStream_t stream) {
  if (batch == 0) return;
  gather_kernel<<<tile_grid(rows, cols, batch), dim3(32, 8), 0, stream>>>(out32, out_op, op, params, offsets, rows, cols);
  CUDA_CHECK_LAUNCH();
}

void spectral_scatter(float* params, bf16* params_bf16, const int64_t* offsets, int batch, int rows, int cols,
                      const float* X, const float* D, const float* SD, float half, cudaStream_t stream) {
  if (batch == 0) return;
  scatter_kernel<<<tile_grid(rows, cols, batch), dim3(32, 8), 0, stream>>>(params, params_bf16, offsets, rows, cols,
                                                                           X, D, SD, half);
  CUDA_CHECK_LAUNCH();
}

void spectral_cast(void* dst_op, OperandType op, const float* src, int64_t n, float scale, float* copy32,
                   cudaStream_t stream) {
  if (n == 0) return;
  cast_kernel<<<grid_for(n, kBlock), kBlock, 0, stream>>>(dst_op, op, src, n, scale, copy32);
  CUDA_CHECK_LAUNCH();
}

void spectral_sumsq(double* sumsq, const float* X, int batch, int64_t n, cudaStream_t stream) {
  if (batch == 0) return;
  sumsq_kernel<<<batch, kBlock, 0, stream>>>(sumsq, X, n);
  CUDA_CHECK_LAUNCH();
}

void spectral_ns_scale(float* X, void* X_op, OperandType op, const double* sumsq, int batch, int64_t n,
                       double safety, double eps, cudaStream_t stream) {
  if (batch == 0) return;
  ns_scale_kernel<<<dim3(per_matrix_blocks(n, batch), batch), kBlock, 0, stream>>>(X, X_op, op, sumsq, n, safety, eps);
  CUDA_CHECK_LAUNCH();
}

void spectral_add_scaled(float* X, void* X_op, OperandType op, const float* T, const double* scale, float sign,
                         int batch, int64_t n, cudaStream_t stream) {
  if (batch == 0) return;
  add_scaled_kernel<<<dim3(per_matrix_blocks(n, batch), batch), kBlock, 0, stream>>>(X, X_op, op, T, scale, sign, n);
  CUDA_CHECK_LAUNCH();
}

void spectral_beta_minus_sym(float* C, const double* beta, int batch, int m, cudaStream_t stream) {
  if (batch == 0) return;
  beta_minus_sym_kernel<<<dim3(per_matrix_blocks(int64_t(m) * m, batch), batch), kBlock, 0, stream>>>(C, beta, m);
  CUDA_CHECK_LAUNCH();
}

void spectral_beta_x_minus_w(float* X, void* X_op, OperandType op, const float* W, const double* beta, int batch,
                             int64_t n, cudaStream_t stream) {
  if (batch == 0) return;
  beta_x_minus_w_kernel<<<dim3(per_matrix_blocks(n, batch), batch), kBlock, 0, stream>>>(X, X_op, op, W, beta, n);
  CUDA_CHECK_LAUNCH();
}

void spectral_scale_add_identity(float* X, float scale, float diag_add, int batch, int m, cudaStream_t stream) {
  scale_add_identity_kernel<<<grid_for(int64_t(batch) * m * m, kBlock), kBlock, 0, stream>>>(X, scale, diag_add,
                                                                                             batch, m);
  CUDA_CHECK_LAUNCH();
}

void spectral_poly(float* P, const float* R, const float* R2, float a, float b, float c, int batch, int m,
                   cudaStream_t stream) {
  poly_kernel<<<grid_for(int64_t(batch) * m * m, kBlock), kBlock, 0, stream>>>(P, R, R2, a, b, c, batch, m);
  CUDA_CHECK_LAUNCH();
}

void spectral_inv_sqrt_trace(double* s, const float* G, int m, double eps, cudaStream_t stream) {
  inv_sqrt_trace_kernel<<<1, kBlock, 0, stream>>>(s, G, m, eps);
  CUDA_CHECK_LAUNCH();
}

void spectral_gram_start(float* Q, float* R, const float* G, const double* s, int m, cudaStream_t stream) {
  gram_start_kernel<<<grid_for(int64_t(m) * m, kBlock), kBlock, 0, stream>>>(Q, R, G, s, m);
  CUDA_CHECK_LAUNCH();
}

void power_start(double* v, const float* v_state, const double* v_cold, int batch, int cols, cudaStream_t stream) {
  if (batch == 0) return;
  power_start_kernel<<<batch, kBlock, 0, stream>>>(v, v_state, v_cold, cols);
  CUDA_CHECK_LAUNCH();
}

void matvec_rows(double* y, const float* base, const int64_t* offsets, int batch, int rows, int cols,
                 const double* x, const int* iters, int it, cudaStream_t stream) {
  if (batch == 0) return;
  matvec_rows_kernel<<<dim3((rows + kBlock / 32 - 1) / (kBlock / 32), batch), kBlock, 0, stream>>>(
      y, base, offsets, rows, cols, x, iters, it);
  CUDA_CHECK_LAUNCH();
}

void matvec_cols(double* partial, const float* base, const int64_t* offsets, int batch, int rows, int cols,
                 const double* x, const int* iters, int it, cudaStream_t stream) {
  if (batch == 0) return;
  matvec_cols_kernel<<<dim3((cols + kBlock - 1) / kBlock, matvec_chunks(rows), batch), kBlock, 0, stream>>>(
      partial, base, offsets, rows, cols, x, iters, it);
  CUDA_CHECK_LAUNCH();
}

void vec_finish(double* y, const double* partial, int n_chunks, int batch, int n, const double* dot_with,
                bool normalize, double* out, bool out_max, const int* iters, int it, cudaStream_t stream) {
  if (batch == 0) return;
  vec_finish_kernel<<<batch, kBlock, 0, stream>>>(y, partial, n_chunks, n, dot_with, normalize, out, out_max, iters,
                                                  it);
  CUDA_CHECK_LAUNCH();
}

void power_store(float* u_state, float* v_state, const double* u, const double* v, const double* sigma, int batch,
                 int rows, int cols, cudaStream_t stream) {
  if (batch == 0) return;
  power_store_kernel<<<grid_for(int64_t(batch) * (rows + cols), kBlock), kBlock, 0, stream>>>(u_state, v_state, u, v,
                                                                                              sigma, batch, rows, cols);
  CUDA_CHECK_LAUNCH();
}

void spectral_normalize_batch(float* params, bf16* params_bf16, const int64_t* offsets, int batch, int64_t n,
                              const double* sigma, const double* w, cudaStream_t stream) {
  if (batch == 0) return;
  normalize_batch_kernel<<<dim3(per_matrix_blocks(n, batch), batch), kBlock, 0, stream>>>(params, params_bf16, offsets,
                                                                                          n, sigma, w);
  CUDA_CHECK_LAUNCH();
}

void spectral_hammer_batch(float* params, bf16* params_bf16, const int64_t* offsets, int batch, int rows, int cols,
                           const float* u, const float* v, const double* sigma, const double* w, cudaStream_t stream) {
  if (batch == 0) return;
  hammer_batch_kernel<<<dim3(per_matrix_blocks(int64_t(rows) * cols, batch), batch), kBlock, 0, stream>>>(
      params, params_bf16, offsets, rows, cols, u, v, sigma, w);
  CUDA_CHECK_LAUNCH();
}

void max_norm_rows(float* E, bf16* E_bf16, int64_t rows, int cols, cudaStream_t stream) {
  if (rows == 0) return;
  max_norm_rows_kernel<<<unsigned((rows + kBlock / 32 - 1) / (kBlock / 32)), kBlock, 0, stream>>>(E, E_bf16, rows,
                                                                                                  cols);
  CUDA_CHECK_LAUNCH();
}

}  // namespace pg::kernels
