// Token + position embedding, forward and backward (math, layouts, grids: embedding.cuh).
#include "backend/cuda/check.hpp"
#include "kernels/common.cuh"
#include "kernels/embedding.cuh"

namespace pg::kernels {
namespace {

// One thread per (row, pack of P channels); P = 8 uses 16-byte loads and stores.
template <int P>
__global__ void embedding_fwd_kernel(bf16* out, const int32_t* tokens, const bf16* wte, const bf16* wpe,
                                     int64_t N, int Tn, int C) {
  const int packs = C / P;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N * packs) return;
  const int64_t row = i / packs;
  const int c = int(i % packs) * P;
  const int t = int(row % Tn);
  const bf16* e = wte + int64_t(tokens[row]) * C + c;
  bf16* o = out + row * C + c;
  if constexpr (P == 8) {
    int4 ev = *reinterpret_cast<const int4*>(e), pv{}, ov;
    if (wpe) pv = *reinterpret_cast<const int4*>(wpe + int64_t(t) * C + c);
    const bf16* ee = reinterpret_cast<const bf16*>(&ev);
    const bf16* pe = reinterpret_cast<const bf16*>(&pv);
    bf16* oe = reinterpret_cast<bf16*>(&ov);
#pragma unroll
    for (int j = 0; j < 8; ++j) oe[j] = from_f32<bf16>(to_f32(ee[j]) + (wpe ? to_f32(pe[j]) : 0.f));
    *reinterpret_cast<int4*>(o) = ov;
  } else {
    o[0] = from_f32<bf16>(to_f32(e[0]) + (wpe ? to_f32(wpe[int64_t(t) * C + c]) : 0.f));
  }
}

__global__ void embedding_bwd_wte_kernel(float* dwte, const bf16* dout, const int32_t* tokens, int64_t N, int C) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N * C) return;
  const int64_t row = i / C;
  const int c = int(i % C);
  atomicAdd(dwte + int64_t(tokens[row]) * C + c, to_f32(dout[i]));
}

// The same with 4 channels per thread and one 16-byte vector atomic (sm_90's float4 atomicAdd):
// a quarter of the atomic operations.
__global__ void embedding_bwd_wte_vec4_kernel(float* dwte, const bf16* dout, const int32_t* tokens, int64_t N,
                                              int C) {
  const int packs = C / 4;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N * packs) return;
  const int64_t row = i / packs;
  const int c = int(i % packs) * 4;
  const uint2 raw = *reinterpret_cast<const uint2*>(dout + row * C + c);
  const float2 a = __bfloat1622float2(reinterpret_cast<const __nv_bfloat162*>(&raw)[0]);
  const float2 b = __bfloat1622float2(reinterpret_cast<const __nv_bfloat162*>(&raw)[1]);
  atomicAdd(reinterpret_cast<float4*>(dwte + int64_t(tokens[row]) * C + c), make_float4(a.x, a.y, b.x, b.y));
}

__global__ void embedding_bwd_wpe_kernel(float* dwpe, const bf16* dout, int B, int Tn, int C) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // over (t, c)
  if (i >= int64_t(Tn) * C) return;
  float s = 0.f;
  for (int b = 0; b < B; ++b) s += to_f32(dout[int64_t(b) * Tn * C + i]);
  dwpe[i] += s;
}

}  // namespace

void embedding_fwd(bf16* out, const int32_t* tokens, const bf16* wte, const bf16* wpe, int B, int Tn,
                   int C, cudaStream_t stream) {
  const int64_t N = int64_t(B) * Tn;
  if (N == 0) return;
  constexpr int kBlock = 256;
  auto aligned = [](const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; };
  if (C % 8 == 0 && aligned(out) && aligned(wte) && (!wpe || aligned(wpe))) {
    const int64_t n = N * (C / 8);
    embedding_fwd_kernel<8><<<unsigned((n + kBlock - 1) / kBlock), kBlock, 0, stream>>>(out, tokens, wte, wpe, N, Tn, C);
  } else {
    const int64_t n = N * C;
    embedding_fwd_kernel<1><<<unsigned((n + kBlock - 1) / kBlock), kBlock, 0, stream>>>(out, tokens, wte, wpe, N, Tn, C);
  }
  CUDA_CHECK_LAUNCH();
}

void embedding_bwd(float* dwte, float* dwpe, const bf16* dout, const int32_t* tokens, int B, int Tn,
                   int C, cudaStream_t stream) {
  const int64_t N = int64_t(B) * Tn;
  if (N == 0) return;
  constexpr int kBlock = 256;
  if (dwte) {
    const bool vec4 = C % 4 == 0 && reinterpret_cast<uintptr_t>(dwte) % 16 == 0 &&
                      reinterpret_cast<uintptr_t>(dout) % 8 == 0;
    if (vec4) {
      const int64_t n = N * (C / 4);
      embedding_bwd_wte_vec4_kernel<<<unsigned((n + kBlock - 1) / kBlock), kBlock, 0, stream>>>(dwte, dout, tokens,
                                                                                                N, C);
    } else {
      embedding_bwd_wte_kernel<<<unsigned((N * C + kBlock - 1) / kBlock), kBlock, 0, stream>>>(dwte, dout, tokens,
                                                                                              N, C);
    }
    CUDA_CHECK_LAUNCH();
  }
  if (dwpe) {
    const int64_t n = int64_t(Tn) * C;
    embedding_bwd_wpe_kernel<<<unsigned((n + kBlock - 1) / kBlock), kBlock, 0, stream>>>(dwpe, dout, B, Tn, C);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace pg::kernels
