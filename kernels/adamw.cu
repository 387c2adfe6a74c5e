// AdamW update, global grad norm, fp32 -> bf16 copy (math and layouts: adamw.cuh).
#include <cmath>

#include "backend/cuda/check.hpp"
#include "kernels/adamw.cuh"
#include "kernels/common.cuh"

namespace pg::kernels {
namespace {

struct AdamWConst {
  float b1, b2, step_size, inv_sqrt_c2, eps, decay, grad_scale;
};

__device__ __forceinline__ float adamw_one(float& w, float g, float& m, float& v, const AdamWConst& k) {
  g *= k.grad_scale;
  m = k.b1 * m + (1.f - k.b1) * g;
  v = k.b2 * v + (1.f - k.b2) * g * g;
  w = w * k.decay - k.step_size * m / (sqrtf(v) * k.inv_sqrt_c2 + k.eps);
  return w;
}

__global__ void adamw_kernel(float* params, bf16* params_bf16, const float* grads, float* m, float* v,
                             int64_t n, bool vec, AdamWConst k) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t i0 = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vec) {
    const int64_t n4 = n / 4;
    for (int64_t p = i0; p < n4; p += stride) {
      float4 w = reinterpret_cast<float4*>(params)[p], g = reinterpret_cast<const float4*>(grads)[p];
      float4 mm = reinterpret_cast<float4*>(m)[p], vv = reinterpret_cast<float4*>(v)[p];
      adamw_one(w.x, g.x, mm.x, vv.x, k);
      adamw_one(w.y, g.y, mm.y, vv.y, k);
      adamw_one(w.z, g.z, mm.z, vv.z, k);
      adamw_one(w.w, g.w, mm.w, vv.w, k);
      reinterpret_cast<float4*>(params)[p] = w;
      reinterpret_cast<float4*>(m)[p] = mm;
      reinterpret_cast<float4*>(v)[p] = vv;
      if (params_bf16) {  // one 8-byte store (vec implies an 8-byte aligned params_bf16)
        uint2 packed;
        reinterpret_cast<__nv_bfloat162*>(&packed)[0] = __floats2bfloat162_rn(w.x, w.y);
        reinterpret_cast<__nv_bfloat162*>(&packed)[1] = __floats2bfloat162_rn(w.z, w.w);
        reinterpret_cast<uint2*>(params_bf16)[p] = packed;
      }
    }
    done = n4 * 4;
  }
  for (int64_t i = done + i0; i < n; i += stride) {
    const float w = adamw_one(params[i], grads[i], m[i], v[i], k);
    if (params_bf16) params_bf16[i] = from_f32<bf16>(w);
  }
}

__global__ void sum_squares_partial_kernel(float* partial, const float* x, int64_t n) {
  __shared__ float scratch[32];
  float s = 0.f;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    s += x[i] * x[i];
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void sqrt_of_sum_kernel(float* out, const float* partial, int n_partial) {
  if (threadIdx.x != 0) return;
  double s = 0.0;
  for (int i = 0; i < n_partial; ++i) s += double(partial[i]);
  out[0] = float(sqrt(s));
}

__global__ void copy_to_bf16_kernel(bf16* dst, const float* src, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = from_f32<bf16>(src[i]);
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

}  // namespace

void adamw_update(float* params, bf16* params_bf16, const float* grads, float* m, float* v, int64_t n,
                  const AdamWStep& s, bool decay, cudaStream_t stream) {
  if (n <= 0) return;
  const double c1 = 1.0 - std::pow(double(s.beta1), double(s.t));
  const double c2 = 1.0 - std::pow(double(s.beta2), double(s.t));
  const AdamWConst k{s.beta1, s.beta2, float(double(s.lr) / c1), float(1.0 / std::sqrt(c2)), s.eps,
                     decay ? float(1.0 - double(s.lr) * double(s.weight_decay)) : 1.f, s.grad_scale};
  const bool vec = aligned16(params) && aligned16(grads) && aligned16(m) && aligned16(v) &&
                   reinterpret_cast<uintptr_t>(params_bf16) % 8 == 0;
  constexpr int kBlock = 256;
  adamw_kernel<<<grid_for(vec ? (n + 3) / 4 : n, kBlock), kBlock, 0, stream>>>(params, params_bf16, grads, m, v,
                                                                                n, vec, k);
  CUDA_CHECK_LAUNCH();
}

void global_grad_norm(float* out, float* scratch, const float* grads, int64_t n, cudaStream_t stream) {
  sum_squares_partial_kernel<<<kNormBlocks, 512, 0, stream>>>(scratch, grads, n);
  CUDA_CHECK_LAUNCH();
  sqrt_of_sum_kernel<<<1, 32, 0, stream>>>(out, scratch, kNormBlocks);
  CUDA_CHECK_LAUNCH();
}

void copy_to_bf16(bf16* dst, const float* src, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  copy_to_bf16_kernel<<<grid_for(n, 256), 256, 0, stream>>>(dst, src, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace pg::kernels
