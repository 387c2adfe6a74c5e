// bf16 -> fp32 widening of a reduced gradient bucket (grad_cast.cuh).
#include "backend/cuda/check.hpp"
#include "kernels/common.cuh"
#include "kernels/grad_cast.cuh"

namespace pg::kernels {
namespace {

__global__ void copy_from_bf16_kernel(float* dst, const bf16* src, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = to_f32(src[i]);
}

}  // namespace

void copy_from_bf16(float* dst, const bf16* src, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  copy_from_bf16_kernel<<<grid_for(n, 256), 256, 0, stream>>>(dst, src, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace pg::kernels
