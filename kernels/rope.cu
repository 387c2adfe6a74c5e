// Rotary position embedding forward and backward (math and layout: rope.cuh).
#include <cmath>

#include "backend/cuda/check.hpp"
#include "kernels/common.cuh"
#include "kernels/rope.cuh"

namespace pg::kernels {
namespace {

// sign = +1: forward rotation; -1: its transpose (backward).
__global__ void rope_kernel(bf16* x, int64_t n_pairs, int Tn, int NH, int hs, double log2_theta, float sign) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_pairs) return;
  const int half = hs / 2;
  const int p = int(i % half);
  const int64_t head_row = i / half;           // (b, t, h)
  const int t = int((head_row / NH) % Tn);
  // The angle in fp64, reduced to [0, 2π) before the fp32 sincos: fp32 t·freq would be off by
  // ~10^-3 rad at t ~ 10^3 (freq's own rounding times t).
  const double freq = exp2(-2.0 * double(p) / double(hs) * log2_theta);  // theta^(-2p/hs)
  const double angle = fmod(double(t) * freq, 6.283185307179586);
  float s, c;
  sincosf(float(angle), &s, &c);
  s *= sign;
  bf16* base = x + head_row * hs;
  const float a = to_f32(base[p]), b = to_f32(base[p + half]);
  base[p] = from_f32<bf16>(a * c - b * s);
  base[p + half] = from_f32<bf16>(a * s + b * c);
}

void launch(bf16* x, int B, int Tn, int NH, int hs, float theta, float sign, cudaStream_t stream) {
  const int64_t n = int64_t(B) * Tn * NH * (hs / 2);
  if (n == 0) return;
  constexpr int kBlock = 256;
  rope_kernel<<<unsigned((n + kBlock - 1) / kBlock), kBlock, 0, stream>>>(x, n, Tn, NH, hs, std::log2(double(theta)), sign);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void rope_fwd(bf16* x, int B, int Tn, int NH, int hs, float theta, cudaStream_t stream) {
  launch(x, B, Tn, NH, hs, theta, 1.f, stream);
}
void rope_bwd(bf16* dx, int B, int Tn, int NH, int hs, float theta, cudaStream_t stream) {
  launch(dx, B, Tn, NH, hs, theta, -1.f, stream);
}

}  // namespace pg::kernels
