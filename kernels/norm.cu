// LayerNorm / RMSNorm fused with the residual add, forward and backward (math, layouts and grid
// shapes: norm.cuh). A warp owns a row: the row's sums are warp shuffles, no shared memory, and
// each lane strides the row by 32 elements (coalesced), or by 32 groups of 8 with 16-byte accesses
// when the rows allow it. Statistics and math are fp32.
#include <initializer_list>

#include "backend/cuda/check.hpp"
#include "core/error.hpp"
#include "kernels/common.cuh"
#include "kernels/norm.cuh"

namespace pg::kernels {
namespace {

constexpr int kWarpsFwd = 4;

// W consecutive bf16 <-> fp32 registers: one 16-byte access for W = 8 (the pointer 16-byte
// aligned), a plain element for W = 1.
template <int W>
__device__ __forceinline__ void load_w(float (&v)[W], const bf16* p) {
  if constexpr (W == 8) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 f = __bfloat1622float2(h[j]);
      v[2 * j] = f.x, v[2 * j + 1] = f.y;
    }
  } else {
    static_assert(W == 1);
    v[0] = to_f32(*p);
  }
}
template <int W>
__device__ __forceinline__ void store_w(bf16* p, const float (&v)[W]) {
  if constexpr (W == 8) {
    uint4 raw;
    __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
    for (int j = 0; j < 4; ++j) h[j] = __floats2bfloat162_rn(v[2 * j], v[2 * j + 1]);
    *reinterpret_cast<uint4*>(p) = raw;
  } else {
    static_assert(W == 1);
    *p = from_f32<bf16>(v[0]);
  }
}

// W = elements per lane access: 8 when C % 8 == 0 and every row is 16-byte aligned (a warp then
// reads 512 contiguous bytes at a time), else 1. Lane l owns columns {l·W + 32·W·i + j}.
template <int W>
__global__ void residual_norm_fwd_kernel(bf16* res_out, bf16* out, float* mean_out, float* rstd_out,
                                         const bf16* res_in, const bf16* branch, const bf16* gain,
                                         const bf16* bias, int N, int C, float eps, bool layer_norm) {
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= N) return;
  const bf16* a = res_in + row * C;
  // x is what the backward will read back: the bf16-rounded sum when there is a branch.
  const bf16* x = a;
  float sum = 0.f;
  float va[W], vb[W], vx[W], vg[W], vo[W];
  if (branch) {
    const bf16* b = branch + row * C;
    bf16* r = res_out + row * C;
    for (int c = lane * W; c < C; c += 32 * W) {
      load_w<W>(va, a + c), load_w<W>(vb, b + c);
#pragma unroll
      for (int j = 0; j < W; ++j) va[j] = to_f32(from_f32<bf16>(va[j] + vb[j]));
      store_w<W>(r + c, va);
#pragma unroll
      for (int j = 0; j < W; ++j) sum += va[j];
    }
    x = r;  // this lane reads back only what it wrote itself
  } else {
    for (int c = lane * W; c < C; c += 32 * W) {
      load_w<W>(va, a + c);
#pragma unroll
      for (int j = 0; j < W; ++j) sum += va[j];
    }
  }
  const float mean = layer_norm ? warp_sum(sum) / float(C) : 0.f;
  float ss = 0.f;
  for (int c = lane * W; c < C; c += 32 * W) {
    load_w<W>(vx, x + c);
#pragma unroll
    for (int j = 0; j < W; ++j) ss += (vx[j] - mean) * (vx[j] - mean);
  }
  const float rstd = rsqrtf(warp_sum(ss) / float(C) + eps);
  bf16* o = out + row * C;
  for (int c = lane * W; c < C; c += 32 * W) {
    load_w<W>(vx, x + c);
#pragma unroll
    for (int j = 0; j < W; ++j) vo[j] = (vx[j] - mean) * rstd;
    if (gain) {
      load_w<W>(vg, gain + c);
#pragma unroll
      for (int j = 0; j < W; ++j) vo[j] *= vg[j];
    }
    if (bias) {
      load_w<W>(vb, bias + c);
#pragma unroll
      for (int j = 0; j < W; ++j) vo[j] += vb[j];
    }
    store_w<W>(o + c, vo);
  }
  if (lane == 0) {
    if (mean_out) mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}

// Grid: kNormBwdBlocks blocks of n_warp warps; dynamic shared memory n_warp·2·C floats (the
// per-warp parameter-gradient partials) when dgain is wanted. W as in the forward.
template <int W>
__global__ void norm_bwd_kernel(bf16* dinp, bool accumulate, float* scratch, bool want_param,
                                const bf16* dout, const bf16* inp, const bf16* gain,
                                const float* mean_in, const float* rstd_in, int N, int C,
                                bool layer_norm) {
  extern __shared__ float part[];  // [n_warp][2][C]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warp = blockDim.x >> 5;
  float* my = part + int64_t(warp) * 2 * C;
  if (want_param)
    for (int c = lane; c < 2 * C; c += 32) my[c] = 0.f;
  float vx[W], vdy[W], vg[W], vd[W];
  for (int j = 0; j < W; ++j) vg[j] = 1.f;
  for (int64_t row = int64_t(blockIdx.x) * n_warp + warp; row < N; row += int64_t(gridDim.x) * n_warp) {
    const bf16* x = inp + row * C;
    const bf16* dy = dout + row * C;
    const float mean = layer_norm ? mean_in[row] : 0.f, rstd = rstd_in[row];
    float sg = 0.f, sgx = 0.f;
    for (int c = lane * W; c < C; c += 32 * W) {
      load_w<W>(vx, x + c), load_w<W>(vdy, dy + c);
      if (gain) load_w<W>(vg, gain + c);
#pragma unroll
      for (int j = 0; j < W; ++j) {
        const float g = vdy[j] * vg[j];
        sg += g;
        sgx += g * ((vx[j] - mean) * rstd);
      }
    }
    const float mg = layer_norm ? warp_sum(sg) / float(C) : 0.f;
    const float mgx = warp_sum(sgx) / float(C);
    bf16* dx = dinp + row * C;
    for (int c = lane * W; c < C; c += 32 * W) {
      load_w<W>(vx, x + c), load_w<W>(vdy, dy + c);
      if (gain) load_w<W>(vg, gain + c);
      if (accumulate) load_w<W>(vd, dx + c);
#pragma unroll
      for (int j = 0; j < W; ++j) {
        const float xhat = (vx[j] - mean) * rstd;
        const float d = rstd * (vdy[j] * vg[j] - mg - xhat * mgx);
        vd[j] = accumulate ? vd[j] + d : d;
        if (want_param) {
          my[c + j] += vdy[j] * xhat;
          my[C + c + j] += vdy[j];
        }
      }
      store_w<W>(dx + c, vd);
    }
  }
  if (!want_param) return;
  __syncthreads();
  // Sum the warps' partials in warp order: this block's partial, deterministic.
  float* out = scratch + int64_t(blockIdx.x) * 2 * C;
  for (int c = threadIdx.x; c < 2 * C; c += blockDim.x) {
    float s = 0.f;
    for (int w = 0; w < n_warp; ++w) s += part[int64_t(w) * 2 * C + c];
    out[c] = s;
  }
}

// 16-byte accesses when every row of every given tensor starts 16-byte aligned.
bool rows_aligned16(int C, std::initializer_list<const void*> ptrs) {
  if (C % 8 != 0) return false;
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

// dgain[c] += Σ_b scratch[b][0][c]; dbias[c] += Σ_b scratch[b][1][c]. Block (8, 32) per 8 columns
// of the 2C partials (32-byte row segments; 2C/8 blocks, enough to spread over the SMs): thread
// row y sums blocks y, y+32, ... in order, then thread row 0 adds the 32 sums in order, so the
// result is the same on every run.
__global__ void norm_param_reduce_kernel(float* dgain, float* dbias, const float* scratch, int n_block, int C) {
  __shared__ float part[32][9];
  const int c = blockIdx.x * 8 + threadIdx.x;  // over 2C: gain partials, then bias partials
  float s = 0.f;
  if (c < 2 * C)
    for (int b = threadIdx.y; b < n_block; b += 32) s += scratch[int64_t(b) * 2 * C + c];
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y != 0 || c >= 2 * C) return;
  float t = 0.f;
  for (int y = 0; y < 32; ++y) t += part[y][threadIdx.x];
  if (c < C) dgain[c] += t;
  else if (dbias) dbias[c - C] += t;
}

}  // namespace

void residual_norm_fwd(bf16* res_out, bf16* out, float* mean, float* rstd, const bf16* res_in,
                       const bf16* branch, const bf16* gain, const bf16* bias, int N, int C,
                       float eps, NormKind kind, cudaStream_t stream) {
  if (N <= 0) return;
  const bool ln = kind == NormKind::LayerNorm;
  PG_CHECK(!ln || mean, "residual_norm_fwd: LayerNorm needs mean");
  PG_CHECK(!branch || res_out, "residual_norm_fwd: a branch needs res_out");
  const unsigned grid = unsigned((N + kWarpsFwd - 1) / kWarpsFwd);
  const auto kernel = rows_aligned16(C, {res_out, out, res_in, branch, gain, bias}) ? residual_norm_fwd_kernel<8>
                                                                                     : residual_norm_fwd_kernel<1>;
  kernel<<<grid, kWarpsFwd * 32, 0, stream>>>(res_out, out, mean, rstd, res_in, branch, gain, bias, N, C, eps, ln);
  CUDA_CHECK_LAUNCH();
}

void norm_bwd(bf16* dinp, bool accumulate, float* dgain, float* dbias, float* scratch,
              const bf16* dout, const bf16* inp, const bf16* gain, const float* mean,
              const float* rstd, int N, int C, NormKind kind, cudaStream_t stream) {
  if (N <= 0) return;
  const bool ln = kind == NormKind::LayerNorm;
  const bool want_param = dgain != nullptr;
  PG_CHECK(!want_param || scratch, "norm_bwd: parameter gradients need scratch");
  PG_CHECK(!(dbias && !want_param), "norm_bwd: dbias without dgain");
  // Shared memory holds 2·C floats per warp; up to 4 warps within the default 48 KB.
  const size_t per_warp = size_t(2) * C * sizeof(float);
  int n_warp = 4;
  if (want_param) {
    while (n_warp > 1 && n_warp * per_warp > 48 * 1024) --n_warp;
    PG_CHECK(per_warp <= 48 * 1024, "norm_bwd: C too large for the parameter-gradient partials");
  }
  const size_t smem = want_param ? n_warp * per_warp : 0;
  const auto kernel = rows_aligned16(C, {dinp, dout, inp, gain}) ? norm_bwd_kernel<8> : norm_bwd_kernel<1>;
  kernel<<<kNormBwdBlocks, n_warp * 32, smem, stream>>>(dinp, accumulate, scratch, want_param, dout, inp, gain, mean,
                                                        rstd, N, C, ln);
  CUDA_CHECK_LAUNCH();
  if (want_param) {
    norm_param_reduce_kernel<<<unsigned((2 * C + 7) / 8), dim3(8, 32), 0, stream>>>(dgain, dbias, scratch,
                                                                                    kNormBwdBlocks, C);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace pg::kernels
