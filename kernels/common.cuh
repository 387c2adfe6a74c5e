// Shared device helpers of the kernels: the bf16 type, loads/stores that convert to fp32 for the
// math, warp and block reductions, and the grid-size rule for elementwise kernels.
//
// Precision (DESIGN.md decision 4): activations and their gradients are bf16 in memory; every
// kernel does its arithmetic in fp32 and rounds once on the store. Statistics (norm mean/rstd),
// softmax and loss values are fp32; parameter gradients and optimizer state are fp32.
#pragma once
#include <algorithm>
#include <cstdint>
#include <unordered_map>

#include "backend/cuda/check.hpp"
#include "kernels/types.cuh"

namespace pg::kernels {

constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;

// Raises a kernel's dynamic shared memory limit to `bytes` (with max_carveout, also asks for all of
// L1 as shared memory) the first time a launch needs it: later launches cost a lookup, not a call
// into the driver. One host thread launches (the trainer's), so the table needs no lock.
inline void set_smem_once(const void* kernel, int bytes, bool max_carveout = false) {
  static std::unordered_map<const void*, int> set;
  auto [it, fresh] = set.try_emplace(kernel, bytes);
  if (!fresh && it->second >= bytes) return;
  it->second = std::max(it->second, bytes);
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, it->second));
  if (max_carveout)
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                    int(cudaSharedmemCarveoutMaxShared)));
}

__device__ __forceinline__ float to_f32(bf16 x) { return __bfloat162float(x); }

// GELU, tanh approximation (GPT-2's), and its derivative (activation.cuh has the formulas), each
// from th = tanh(k·(x + c·x³)): with tanhf (gelu_f, gelu_grad_f), or with the hardware's tanh
// (tanh.approx.f32, one MUFU instruction, relative error about 2^-11: gelu_fast_f,
// gelu_grad_fast_f) for results rounded to bf16 (2^-9) in GEMM epilogues, where tanhf's
// instruction sequence would dominate. Written as the fused multiply-adds they take (three
// instructions for the argument, two for GELU, five more for its derivative, x² shared):
//   k·(x + c·x³) = x·(k + kc·x²);  0.5x(1 + th) = h + h·th, h = 0.5x;
//   gelu'(x) = 0.5(1 + th) + 0.5x(1 − th²)·k(1 + 3c·x²).
// The derivative takes a scale s and returns s·gelu'(x) for the price of gelu'(x) (s folds into
// its halves), so that a GEMM epilogue's alpha costs nothing.
constexpr float kGeluK = 0.7978845608028654f;  // sqrt(2/π)
constexpr float kGeluC = 0.044715f;
__device__ __forceinline__ float gelu_tanh_arg(float x) { return x * fmaf(kGeluK * kGeluC, x * x, kGeluK); }
__device__ __forceinline__ float gelu_from_tanh(float x, float th) {
  const float h = 0.5f * x;
  return fmaf(h, th, h);
}
__device__ __forceinline__ float gelu_grad_from_tanh(float x, float th, float scale = 1.f) {
  const float hs = 0.5f * scale;
  const float sech2 = fmaf(-th, th, 1.f), dk = fmaf(3.f * kGeluC * kGeluK, x * x, kGeluK);
  return fmaf(hs * x * sech2, dk, fmaf(hs, th, hs));
}
__device__ __forceinline__ float tanh_fast(float x) {
  float y;
  asm("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float gelu_f(float x) { return gelu_from_tanh(x, tanhf(gelu_tanh_arg(x))); }
__device__ __forceinline__ float gelu_grad_f(float x) { return gelu_grad_from_tanh(x, tanhf(gelu_tanh_arg(x))); }
__device__ __forceinline__ float gelu_fast_f(float x) { return gelu_from_tanh(x, tanh_fast(gelu_tanh_arg(x))); }
__device__ __forceinline__ float gelu_grad_fast_f(float x, float scale = 1.f) {
  return gelu_grad_from_tanh(x, tanh_fast(gelu_tanh_arg(x)), scale);
}

// Eight bf16 in one 16-byte word <-> eight fp32 (the 16-byte row accesses of norm.cu and moe.cu).
__device__ __forceinline__ void unpack8(const uint4& raw, float* f) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 t = __bfloat1622float2(h[i]);
    f[2 * i] = t.x, f[2 * i + 1] = t.y;
  }
}
__device__ __forceinline__ uint4 pack8(const float* f) {
  uint4 raw;
  __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
  return raw;
}
__device__ __forceinline__ float to_f32(float x) { return x; }
template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ bf16 from_f32<bf16>(float x) { return __float2bfloat16_rn(x); }
template <>
__device__ __forceinline__ float from_f32<float>(float x) { return x; }

// Sum over the warp in a fixed order (deterministic), for float or double.
template <class T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024) in a fixed order; every thread
// gets the total. `scratch` is 32 elements of shared memory; the call synchronises the block twice.
template <class T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warp = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < n_warp ? scratch[lane] : T(0);
  return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warp = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < n_warp ? scratch[lane] : -INFINITY;
  return warp_max(v);
}

// Grid for a grid-stride loop over n elements with `block` threads: enough blocks to fill the
// GPU several times over, never more than the work needs.
inline unsigned grid_for(int64_t n, int block) {
  const int64_t want = (n + block - 1) / block;
  return unsigned(want < 1 ? 1 : (want > 132 * 32 ? 132 * 32 : want));
}

}  // namespace pg::kernels
