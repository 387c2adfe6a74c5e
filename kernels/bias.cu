// Bias gradient: column sums of dout, deterministic (bias.cuh).
#include "backend/cuda/check.hpp"
#include "kernels/bias.cuh"
#include "kernels/common.cuh"

namespace pg::kernels {
namespace {

// block (32, 8): threadIdx.x = column within the 32-column slab, threadIdx.y = row phase.
__global__ void bias_partial_kernel(float* scratch, const bf16* dout, int N, int OC) {
  __shared__ float part[8][33];
  const int c = blockIdx.x * 32 + threadIdx.x;
  const int chunk = blockIdx.y;
  const int rows_per_chunk = (N + gridDim.y - 1) / gridDim.y;
  const int r0 = chunk * rows_per_chunk, r1 = min(N, r0 + rows_per_chunk);
  float s = 0.f;
  if (c < OC)
    for (int r = r0 + threadIdx.y; r < r1; r += 8) s += to_f32(dout[int64_t(r) * OC + c]);
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < OC) {
    float t = 0.f;
    for (int y = 0; y < 8; ++y) t += part[y][threadIdx.x];
    scratch[int64_t(chunk) * OC + c] = t;
  }
}

// The same with 8 columns per thread from one 16-byte load (OC % 8 == 0, dout 16-byte aligned):
// a warp reads 512 contiguous bytes of a row instead of 64, and a block covers 256 columns.
__global__ void bias_partial_vec8_kernel(float* scratch, const bf16* dout, int N, int OC) {
  __shared__ float part[8][256 + 1];
  const int c0 = blockIdx.x * 256 + threadIdx.x * 8;
  const int chunk = blockIdx.y;
  const int rows_per_chunk = (N + gridDim.y - 1) / gridDim.y;
  const int r0 = chunk * rows_per_chunk, r1 = min(N, r0 + rows_per_chunk);
  float s[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  if (c0 < OC)
    for (int r = r0 + threadIdx.y; r < r1; r += 8) {
      const uint4 raw = *reinterpret_cast<const uint4*>(dout + int64_t(r) * OC + c0);
      const bf16* x = reinterpret_cast<const bf16*>(&raw);
#pragma unroll
      for (int j = 0; j < 8; ++j) s[j] += to_f32(x[j]);
    }
#pragma unroll
  for (int j = 0; j < 8; ++j) part[threadIdx.y][threadIdx.x * 8 + j] = s[j];
  __syncthreads();
  // 256 threads, one column each, add the 8 row phases in order.
  const int t = threadIdx.y * 32 + threadIdx.x, c = blockIdx.x * 256 + t;
  if (c < OC) {
    float tot = 0.f;
    for (int y = 0; y < 8; ++y) tot += part[y][t];
    scratch[int64_t(chunk) * OC + c] = tot;
  }
}

__global__ void bias_reduce_kernel(float* dbias, const float* scratch, int n_chunk, int OC) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= OC) return;
  float s = 0.f;
  for (int k = 0; k < n_chunk; ++k) s += scratch[int64_t(k) * OC + c];
  dbias[c] += s;
}

}  // namespace

void bias_accumulate(float* dbias, const float* partial, int OC, cudaStream_t stream) {
  if (OC <= 0) return;
  bias_reduce_kernel<<<unsigned((OC + 255) / 256), 256, 0, stream>>>(dbias, partial, 1, OC);
  CUDA_CHECK_LAUNCH();
}

void bias_bwd(float* dbias, float* scratch, const bf16* dout, int N, int OC, cudaStream_t stream) {
  if (N <= 0 || OC <= 0) return;
  if (OC % 8 == 0 && reinterpret_cast<uintptr_t>(dout) % 16 == 0) {
    const dim3 grid(unsigned((OC + 255) / 256), kBiasRowChunks);
    bias_partial_vec8_kernel<<<grid, dim3(32, 8), 0, stream>>>(scratch, dout, N, OC);
  } else {
    const dim3 grid(unsigned((OC + 31) / 32), kBiasRowChunks);
    bias_partial_kernel<<<grid, dim3(32, 8), 0, stream>>>(scratch, dout, N, OC);
  }
  CUDA_CHECK_LAUNCH();
  bias_reduce_kernel<<<unsigned((OC + 255) / 256), 256, 0, stream>>>(dbias, scratch, kBiasRowChunks, OC);
  CUDA_CHECK_LAUNCH();
}

}  // namespace pg::kernels
