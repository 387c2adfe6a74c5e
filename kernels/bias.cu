// Bias gradient: column sums of dout, deterministic (bias.cuh).
#include "backend/cuda/check.hpp"
#include "kernels/bias.cuh"
#include "kernels/common.cuh"

namespace pg::kernels {
namespace {

constexpr int kRowsInFlight = 4;  // independent loads per thread per loop trip

// The rows [r0, r1) of chunk blockIdx.y: N split as evenly as the chunk count allows.
__device__ __forceinline__ void chunk_rows(int N, int& r0, int& r1) {
  const int rows_per_chunk = (N + gridDim.y - 1) / gridDim.y;
  r0 = min(N, int(blockIdx.y) * rows_per_chunk), r1 = min(N, r0 + rows_per_chunk);
}

// block (32, 8): threadIdx.x = column within the 32-column slab, threadIdx.y = row phase; thread
// (x, y) adds rows r0 + y, r0 + y + 8, ... in that order.
__global__ void bias_partial_kernel(float* scratch, const bf16* dout, int N, int OC) {
  __shared__ float part[8][33];
  const int c = blockIdx.x * 32 + threadIdx.x;
  int r0, r1;
  chunk_rows(N, r0, r1);
  float s = 0.f;
  if (c < OC) {
    int r = r0 + threadIdx.y;
    for (; r + 8 * (kRowsInFlight - 1) < r1; r += 8 * kRowsInFlight) {
      float x[kRowsInFlight];
#pragma unroll
      for (int i = 0; i < kRowsInFlight; ++i) x[i] = to_f32(dout[int64_t(r + 8 * i) * OC + c]);
#pragma unroll
      for (int i = 0; i < kRowsInFlight; ++i) s += x[i];
    }
    for (; r < r1; r += 8) s += to_f32(dout[int64_t(r) * OC + c]);
  }
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < OC) {
    float t = 0.f;
    for (int y = 0; y < 8; ++y) t += part[y][threadIdx.x];
    scratch[int64_t(blockIdx.y) * OC + c] = t;
  }
}

// The same with 8 columns per thread from one 16-byte load (OC % 8 == 0, dout 16-byte aligned):
// a warp reads 512 contiguous bytes of a row instead of 64, and a block covers 256 columns.
__global__ void __launch_bounds__(256, 8) bias_partial_vec8_kernel(float* scratch, const bf16* dout, int N, int OC) {
  __shared__ float part[8][256 + 1];
  const int c0 = blockIdx.x * 256 + threadIdx.x * 8;
  int r0, r1;
  chunk_rows(N, r0, r1);
  float s[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  if (c0 < OC) {
    const bf16* col = dout + c0;
    int r = r0 + threadIdx.y;
    for (; r + 8 * (kRowsInFlight - 1) < r1; r += 8 * kRowsInFlight) {
      uint4 raw[kRowsInFlight];
#pragma unroll
      for (int i = 0; i < kRowsInFlight; ++i) raw[i] = *reinterpret_cast<const uint4*>(col + int64_t(r + 8 * i) * OC);
#pragma unroll
      for (int i = 0; i < kRowsInFlight; ++i) {
        float x[8];
        unpack8(raw[i], x);
#pragma unroll
        for (int j = 0; j < 8; ++j) s[j] += x[j];
      }
    }
    for (; r < r1; r += 8) {
      float x[8];
      unpack8(*reinterpret_cast<const uint4*>(col + int64_t(r) * OC), x);
#pragma unroll
      for (int j = 0; j < 8; ++j) s[j] += x[j];
    }
  }
#pragma unroll
  for (int j = 0; j < 8; ++j) part[threadIdx.y][threadIdx.x * 8 + j] = s[j];
  __syncthreads();
  // 256 threads, one column each, add the 8 row phases in order.
  const int t = threadIdx.y * 32 + threadIdx.x, c = blockIdx.x * 256 + t;
  if (c < OC) {
    float tot = 0.f;
    for (int y = 0; y < 8; ++y) tot += part[y][t];
    scratch[int64_t(blockIdx.y) * OC + c] = tot;
  }
}

// block (32, kReduceRows), one block per 32 columns: thread (x, y) adds chunks y, y + kReduceRows,
// ... of column x, then the kReduceRows phases are added in order: dbias[c] += Σ_chunk
// scratch[chunk][c]. 32 rows of threads: the q/k/v bias's 512 partial rows at GPT-2's B = 64 take
// 16 loads a thread (8 rows took 10 µs, a chain of 64).
constexpr int kReduceRows = 32;
__global__ void bias_reduce_kernel(float* dbias, const float* scratch, int n_chunk, int OC) {
  __shared__ float part[kReduceRows][33];
  const int c = blockIdx.x * 32 + threadIdx.x;
  float s = 0.f;
  if (c < OC)
    for (int k = threadIdx.y; k < n_chunk; k += kReduceRows) s += scratch[int64_t(k) * OC + c];
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < OC) {
    float t = 0.f;
    for (int y = 0; y < kReduceRows; ++y) t += part[y][threadIdx.x];
    dbias[c] += t;
  }
}

}  // namespace

void bias_accumulate(float* dbias, const float* partial, int OC, cudaStream_t stream, int n_partial) {
  if (OC <= 0 || n_partial <= 0) return;
  bias_reduce_kernel<<<unsigned((OC + 31) / 32), dim3(32, kReduceRows), 0, stream>>>(dbias, partial, n_partial, OC);
  CUDA_CHECK_LAUNCH();
}

void bias_bwd(float* dbias, float* scratch, const bf16* dout, int N, int OC, cudaStream_t stream) {
  if (N <= 0 || OC <= 0) return;
  int n_chunk = 0;
  if (OC % 8 == 0 && reinterpret_cast<uintptr_t>(dout) % 16 == 0) {
    n_chunk = bias_bwd_chunks(OC, 256);
    const dim3 grid(unsigned((OC + 255) / 256), unsigned(n_chunk));
    bias_partial_vec8_kernel<<<grid, dim3(32, 8), 0, stream>>>(scratch, dout, N, OC);
  } else {
    n_chunk = bias_bwd_chunks(OC, 32);
    const dim3 grid(unsigned((OC + 31) / 32), unsigned(n_chunk));
    bias_partial_kernel<<<grid, dim3(32, 8), 0, stream>>>(scratch, dout, N, OC);
  }
  CUDA_CHECK_LAUNCH();
  bias_accumulate(dbias, scratch, OC, stream, n_chunk);
}

}  // namespace pg::kernels
