// LayerNorm / RMSNorm fused with the residual add, forward and backward (math, layouts and grid
// shapes: norm.cuh). A warp owns a row: the row's sums are warp shuffles, no shared memory, and
// each lane strides the row by 32 elements (coalesced), or by 32 groups of 8 with 16-byte accesses
// when the rows allow it. The backward of rows of 256 to 768 columns takes norm_bwd_warp_ring_kernel
// by default (a warp a row, NormBwdKernel::WarpRing); NormBwdKernel::Group, and rows of 776 to 1024
// columns, give a row to a group of warps instead (norm_bwd_ring_kernel). Statistics and math are
// fp32.
#include <algorithm>
#include <initializer_list>

#include "backend/cuda/check.hpp"
#include "backend/cuda/device.hpp"
#include "core/error.hpp"
#include "kernels/attention_tiles.cuh"
#include "kernels/common.cuh"
#include "kernels/norm.cuh"

namespace pg::kernels {
namespace {

constexpr int kWarpsFwd = 4;
constexpr int kNormBwdWarps = 4;  // warps per block of the backward
constexpr int kNormRegIters = 4;  // the register kernels cover C <= 256·4

// x as the bf16 store will hold it.
__device__ __forceinline__ float rounded(float x) { return to_f32(from_f32<bf16>(x)); }

// W consecutive bf16 <-> fp32 registers: one 16-byte access for W = 8 (the pointer 16-byte
// aligned), a plain element for W = 1.
template <int W>
__device__ __forceinline__ void load_w(float (&v)[W], const bf16* p) {
  if constexpr (W == 8) {
    unpack8(*reinterpret_cast<const uint4*>(p), v);
  } else {
    static_assert(W == 1);
    v[0] = to_f32(*p);
  }
}
template <int W>
__device__ __forceinline__ void store_w(bf16* p, const float (&v)[W]) {
  if constexpr (W == 8) {
    *reinterpret_cast<uint4*>(p) = pack8(v);
  } else {
    static_assert(W == 1);
    *p = from_f32<bf16>(v[0]);
  }
}
// store_w<8> that also adds the values as stored (rounded to bf16) into sum: a column sum of
// the gradient as written.
__device__ __forceinline__ void store8_summed(bf16* p, const float (&v)[8], float (&sum)[8]) {
  const uint4 packed = pack8(v);
  *reinterpret_cast<uint4*>(p) = packed;
  float r[8];
  unpack8(packed, r);
#pragma unroll
  for (int j = 0; j < 8; ++j) sum[j] += r[j];
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
  const float mean = layer_norm ? warp_sum(sum) * (1.f / float(C)) : 0.f;
  float ss = 0.f;
  for (int c = lane * W; c < C; c += 32 * W) {
    load_w<W>(vx, x + c);
#pragma unroll
    for (int j = 0; j < W; ++j) ss += (vx[j] - mean) * (vx[j] - mean);
  }
  const float rstd = rsqrtf(warp_sum(ss) * (1.f / float(C)) + eps);
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

// The forward for rows of C <= 256·ITERS with 16-byte accesses: lane l owns the columns
// {l·8 + 256·i + j : i < ITERS, j < 8} and keeps them in registers, so the row is read from
// global memory once (all of a lane's loads issued together) and the statistics' passes run on
// registers.
template <int ITERS>
__global__ void residual_norm_fwd_reg_kernel(bf16* res_out, bf16* out, float* mean_out, float* rstd_out,
                                             const bf16* res_in, const bf16* branch, const bf16* gain,
                                             const bf16* bias, int N, int C, float eps, bool layer_norm) {
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= N) return;
  float x[ITERS][8], vb[ITERS][8];
#pragma unroll
  for (int i = 0; i < ITERS; ++i) {
    const int c = lane * 8 + 256 * i;
#pragma unroll
    for (int j = 0; j < 8; ++j) x[i][j] = 0.f;
    if (c < C) {
      load_w<8>(x[i], res_in + row * C + c);
      if (branch) load_w<8>(vb[i], branch + row * C + c);
    }
  }
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < ITERS; ++i) {
    const int c = lane * 8 + 256 * i;
    if (branch && c < C) {  // x is what the backward will read back: the bf16-rounded sum
#pragma unroll
      for (int j = 0; j < 8; ++j) x[i][j] = rounded(x[i][j] + vb[i][j]);
      store_w<8>(res_out + row * C + c, x[i]);
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) sum += x[i][j];  // 0 beyond C
  }
  const float inv_c = 1.f / float(C);  // one division a thread, not two a row
  const float mean = layer_norm ? warp_sum(sum) * inv_c : 0.f;
  float ss = 0.f;
#pragma unroll
  for (int i = 0; i < ITERS; ++i) {
    if (lane * 8 + 256 * i >= C) continue;
#pragma unroll
    for (int j = 0; j < 8; ++j) ss += (x[i][j] - mean) * (x[i][j] - mean);
  }
  const float rstd = rsqrtf(warp_sum(ss) * inv_c + eps);
#pragma unroll
  for (int i = 0; i < ITERS; ++i) {
    const int c = lane * 8 + 256 * i;
    if (c >= C) continue;
    float vo[8], vp[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) vo[j] = (x[i][j] - mean) * rstd;
    if (gain) {
      load_w<8>(vp, gain + c);
#pragma unroll
      for (int j = 0; j < 8; ++j) vo[j] *= vp[j];
    }
    if (bias) {
      load_w<8>(vp, bias + c);
#pragma unroll
      for (int j = 0; j < 8; ++j) vo[j] += vp[j];
    }
    store_w<8>(out + row * C + c, vo);
  }
  if (lane == 0) {
    if (mean_out) mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}

// The general backward: a grid of blocks of n_warp warps striding over the rows; dynamic shared
// memory n_warp·3·C floats (the per-warp parameter-gradient partials: dgain, dbias, dsum) when
// want_param. W as in the forward.
template <int W>
__global__ void norm_bwd_kernel(bf16* dinp, bool accumulate, float* scratch, bool want_param,
                                const bf16* dout, const bf16* inp, const bf16* gain,
                                const float* mean_in, const float* rstd_in, int N, int C,
                                bool layer_norm) {
  extern __shared__ float part[];  // [n_warp][3][C]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warp = blockDim.x >> 5;
  float* my = part + int64_t(warp) * 3 * C;
  if (want_param)
    for (int c = lane; c < 3 * C; c += 32) my[c] = 0.f;
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
    const float mg = layer_norm ? warp_sum(sg) * (1.f / float(C)) : 0.f;
    const float mgx = warp_sum(sgx) * (1.f / float(C));
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
          my[2 * C + c + j] += rounded(vd[j]);
        }
      }
      store_w<W>(dx + c, vd);
    }
  }
  if (!want_param) return;
  __syncthreads();
  // Sum the warps' partials in warp order: this block's partial, deterministic.
  float* out = scratch + int64_t(blockIdx.x) * 3 * C;
  for (int c = threadIdx.x; c < 3 * C; c += blockDim.x) {
    float s = 0.f;
    for (int w = 0; w < n_warp; ++w) s += part[int64_t(w) * 3 * C + c];
    out[c] = s;
  }
}

// A lane's parameter sums over its rows, in kernels where a warp owns a row and lane l the
// columns {8l + 256i + j}: dgain's (g), dbias's (b) and dsum's (s), from zero.
template <int ITERS>
struct LaneParamSums {
  float g[ITERS][8] = {}, b[ITERS][8] = {}, s[ITERS][8] = {};
};

// The block's parameter partial: the lanes' sums added into part [3][C] (shared memory) in warp
// order, so the result is the same on every run, then written as the block's row of scratch.
template <int ITERS>
__device__ void write_param_partial(float* part, float* scratch, const LaneParamSums<ITERS>& ps, int C) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warp = blockDim.x >> 5;
  for (int w = 0; w < n_warp; ++w) {
    if (warp == w) {
#pragma unroll
      for (int i = 0; i < ITERS; ++i) {
        const int c = lane * 8 + 256 * i;
        if (c >= C) continue;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          part[c + j] = w == 0 ? ps.g[i][j] : part[c + j] + ps.g[i][j];
          part[C + c + j] = w == 0 ? ps.b[i][j] : part[C + c + j] + ps.b[i][j];
          part[2 * C + c + j] = w == 0 ? ps.s[i][j] : part[2 * C + c + j] + ps.s[i][j];
        }
      }
    }
    __syncthreads();
  }
  float* out = scratch + int64_t(blockIdx.x) * 3 * C;
  for (int c = threadIdx.x; c < 3 * C; c += blockDim.x) out[c] = part[c];
}

// The backward for rows of C <= 256·ITERS with 16-byte accesses: lane l owns the columns
// {l·8 + 256·i + j : i < ITERS, j < 8}; a row's x and dout stay in registers between the two
// passes, and with PARAM the lane sums its columns' parameter gradients (dgain, dbias, dsum) in
// registers over all of its rows. At the end the warps add their sums into shared memory in warp
// order (3·C floats) and the block writes them as its partial: deterministic.
template <int ITERS, bool PARAM>
__global__ void __launch_bounds__(kNormBwdWarps * 32)
    norm_bwd_reg_kernel(bf16* dinp, bool accumulate, float* scratch, const bf16* dout, const bf16* inp,
                        const bf16* gain, const float* mean_in, const float* rstd_in, int N, int C,
                        bool layer_norm) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warp = blockDim.x >> 5;
  LaneParamSums<PARAM ? ITERS : 1> ps;
  for (int64_t row = int64_t(blockIdx.x) * n_warp + warp; row < N; row += int64_t(gridDim.x) * n_warp) {
    const bf16* x = inp + row * C;
    const bf16* dy = dout + row * C;
    const float mean = layer_norm ? mean_in[row] : 0.f, rstd = rstd_in[row];
    float xh[ITERS][8], vdy[ITERS][8], vg[8];
    float sg = 0.f, sgx = 0.f;
#pragma unroll
    for (int i = 0; i < ITERS; ++i) {
      const int c = lane * 8 + 256 * i;
#pragma unroll
      for (int j = 0; j < 8; ++j) xh[i][j] = vdy[i][j] = 0.f;
      if (c < C) {
        load_w<8>(xh[i], x + c), load_w<8>(vdy[i], dy + c);
        if (gain) load_w<8>(vg, gain + c);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          xh[i][j] = (xh[i][j] - mean) * rstd;
          const float g = gain ? vdy[i][j] * vg[j] : vdy[i][j];
          sg += g;
          sgx += g * xh[i][j];
        }
      }
    }
    const float mg = layer_norm ? warp_sum(sg) * (1.f / float(C)) : 0.f;
    const float mgx = warp_sum(sgx) * (1.f / float(C));
    bf16* dx = dinp + row * C;
#pragma unroll
    for (int i = 0; i < ITERS; ++i) {
      const int c = lane * 8 + 256 * i;
      if (c >= C) continue;
      float vd[8];
      if (gain) load_w<8>(vg, gain + c);
      if (accumulate) load_w<8>(vd, dx + c);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float g = gain ? vdy[i][j] * vg[j] : vdy[i][j];
        const float d = rstd * (g - mg - xh[i][j] * mgx);
        vd[j] = accumulate ? vd[j] + d : d;
        if constexpr (PARAM) {
          ps.g[i][j] += vdy[i][j] * xh[i][j];
          ps.b[i][j] += vdy[i][j];
          ps.s[i][j] += rounded(vd[j]);
        }
      }
      store_w<8>(dx + c, vd);
    }
  }
  if constexpr (PARAM) {
    extern __shared__ float part[];  // [3][C]
    write_param_partial<ITERS>(part, scratch, ps, C);
  }
}

// The backward for rows of 256 <= C <= 1024 with 16-byte accesses (the model's norms): a group of
// NWG = ceil(C/256) warps owns a row, thread t of the group its 8 columns {8t + j} (idle where
// 8t >= C), and a block of kRingThreads threads holds kRingThreads / (32·NWG) groups, each
// striding over the rows. The register kernel above keeps three parameter sums per element a lane
// owns (72 registers at C = 768): 12 warps per SM, one row each in flight, ~1.9 TB/s. With 8
// columns a thread needs 24 sums, which leaves room for 2 blocks of 384 threads per SM and a ring
// of kRingStages rows in shared memory fed by cp.async: each thread copies its own 16-byte chunks
// of the next kRingStages - 1 rows (x, dout, the accumulated dinp) and its copy of their mean and
// rstd, and reads back only what it copied, so the ring needs no barrier (~150 KB in flight per
// SM). A row's two sums cross the group's warps through shared memory (a named barrier per group,
// double-buffered by row parity, so one barrier per row). Parameter sums: per thread in registers
// over its rows, then added over the block's groups in group order into its partial: deterministic.
constexpr int kRingThreads = 384;
constexpr int kRingStages = 5;

struct RingSlot {  // one stage of one thread
  uint4 x, dy, dd;
};
// Shared memory of the ring kernel: [stages][threads] slots, [stages][threads] (mean, rstd), then
// the row sums [groups][2 parities][NWG warps][2]; the partials [groups][3][C] reuse the ring.
constexpr size_t kRingSmem = size_t(kRingStages) * kRingThreads * (sizeof(RingSlot) + sizeof(float2)) +
                             size_t(kRingThreads / 32) * 2 * 2 * sizeof(float);

__device__ __forceinline__ void cp_async4(void* dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(tiles::smem_addr(dst)), "l"(src));
}
// The NWG warps of group g (named barrier g + 1; 0 is __syncthreads').
template <int NWG>
__device__ __forceinline__ void group_sync(int g) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(g + 1), "n"(32 * NWG) : "memory");
}

template <int NWG, bool PARAM>
__global__ void __launch_bounds__(kRingThreads, 2)
    norm_bwd_ring_kernel(bf16* dinp, bool accumulate, float* scratch, const bf16* dout, const bf16* inp,
                         const bf16* gain, const float* mean_in, const float* rstd_in, int N, int C,
                         bool layer_norm) {
  constexpr int kGroupThreads = 32 * NWG, kGroups = kRingThreads / kGroupThreads;
  extern __shared__ __align__(16) unsigned char smem[];
  RingSlot* ring = reinterpret_cast<RingSlot*>(smem);  // [stages][threads]
  float2* stats = reinterpret_cast<float2*>(ring + kRingStages * kRingThreads);
  float* red = reinterpret_cast<float*>(stats + kRingStages * kRingThreads);  // [groups][2][NWG][2]
  const int tid = threadIdx.x, group = tid / kGroupThreads, t = tid % kGroupThreads;
  const int warp = t >> 5, lane = t & 31, c = 8 * t;
  const bool active = c < C;
  const float inv_c = 1.f / float(C);
  float vg[8];
  for (int j = 0; j < 8; ++j) vg[j] = 1.f;
  if (gain && active) load_w<8>(vg, gain + c);
  float ag[8], ab[8], as[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) ag[j] = ab[j] = as[j] = 0.f;

  // Row `row` into stage s; one commit group per call (empty past N or for idle threads), so the
  // group count stays uniform for the waits.
  auto issue = [&](int64_t row, int s) {
    if (row < N && active) {
      RingSlot& slot = ring[s * kRingThreads + tid];
      tiles::cp_async16(&slot.x, inp + row * C + c, true);
      tiles::cp_async16(&slot.dy, dout + row * C + c, true);
      if (accumulate) tiles::cp_async16(&slot.dd, dinp + row * C + c, true);
      float2& st = stats[s * kRingThreads + tid];
      if (layer_norm) cp_async4(&st.x, mean_in + row);
      cp_async4(&st.y, rstd_in + row);
    }
    tiles::cp_async_commit();
  };
  const int64_t stride = int64_t(gridDim.x) * kGroups;
  int64_t row = int64_t(blockIdx.x) * kGroups + group;
#pragma unroll
  for (int s = 0; s < kRingStages - 1; ++s) issue(row + s * stride, s);
  // s: the stage of this iteration's row; the stage refilled (with the row kRingStages - 1 ahead)
  // is the one this thread read in the previous iteration, s - 1.
  for (int k = 0, s = 0; row < N; ++k, row += stride, s = s + 1 == kRingStages ? 0 : s + 1) {
    issue(row + (kRingStages - 1) * stride, s == 0 ? kRingStages - 1 : s - 1);
    tiles::cp_async_wait<kRingStages - 1>();
    float xh[8], vdy[8];
    float sg = 0.f, sgx = 0.f, rstd = 0.f;
    if (active) {
      const RingSlot& slot = ring[s * kRingThreads + tid];
      const float2 st = stats[s * kRingThreads + tid];
      rstd = st.y;
      const float shift = layer_norm ? -st.x * rstd : 0.f;
      unpack8(slot.x, xh), unpack8(slot.dy, vdy);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        xh[j] = fmaf(xh[j], rstd, shift);  // (x - mean)·rstd
        const float g = vdy[j] * vg[j];
        sg += g;
        sgx = fmaf(g, xh[j], sgx);
      }
    }
    sg = warp_sum(sg), sgx = warp_sum(sgx);
    if constexpr (NWG > 1) {
      float* r = red + ((group * 2 + (k & 1)) * NWG) * 2;
      if (lane == 0) r[2 * warp] = sg, r[2 * warp + 1] = sgx;
      group_sync<NWG>(group);
      sg = sgx = 0.f;
#pragma unroll
      for (int w = 0; w < NWG; ++w) sg += r[2 * w], sgx += r[2 * w + 1];
    }
    if (!active) continue;
    // d = rstd·(g - mean(g) - xh·mean(g·xh)) = rstd·g + xh·cx + c0.
    const float c0 = layer_norm ? -rstd * sg * inv_c : 0.f, cx = -rstd * sgx * inv_c;
    float vd[8];
    if (accumulate) unpack8(ring[s * kRingThreads + tid].dd, vd);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float d = fmaf(rstd, vdy[j] * vg[j], fmaf(xh[j], cx, c0));
      vd[j] = accumulate ? vd[j] + d : d;
      if constexpr (PARAM) {
        ag[j] = fmaf(vdy[j], xh[j], ag[j]);
        ab[j] += vdy[j];
      }
    }
    if constexpr (PARAM) store8_summed(dinp + row * C + c, vd, as);  // dsum: of dinp as stored
    else store_w<8>(dinp + row * C + c, vd);
  }
  if constexpr (PARAM) {
    tiles::cp_async_wait<0>();  // only empty groups are left, but the ring's memory is reused
    __syncthreads();
    float* part = reinterpret_cast<float*>(smem);  // [groups][3][C]
    if (active) {
      float* p = part + int64_t(group) * 3 * C + c;
#pragma unroll
      for (int j = 0; j < 8; ++j) p[j] = ag[j], p[C + j] = ab[j], p[2 * C + j] = as[j];
    }
    __syncthreads();
    float* out = scratch + int64_t(blockIdx.x) * 3 * C;
    for (int i = tid; i < 3 * C; i += kRingThreads) {
      float sum = 0.f;
      for (int g = 0; g < kGroups; ++g) sum += part[g * 3 * C + i];
      out[i] = sum;
    }
  }
}

// NormBwdKernel::WarpRing, for rows of 256 <= C <= 256·ITERS with 16-byte accesses: a warp owns a
// row, lane l its columns {8l + 256i + j : i < ITERS, j < 8}, so the row sums need no barrier and
// a row's fixed costs (addresses, waits, the two shuffle chains) are paid once, not by each of a
// group's warps. Each warp streams its next row into a two-stage shared-memory ring by cp.async
// (each lane copies its own chunks and reads back only those: no barrier); x and dout are read
// from the ring again after the row sums instead of held, so that the lane's three parameter sums
// per column (72 registers at C = 768) fit in 128 registers, two blocks of kWarpRingWarps an SM.
// The gain is read from shared memory (fp32). Parameter sums: per lane over its rows, then added
// over the block's warps in warp order into its partial: deterministic.
constexpr int kWarpRingWarps = 8, kWarpRingStages = 2;
constexpr int kWarpRingMaxIters = 3;  // C <= 768: at 4 the lane's 96 parameter sums spill
template <int ITERS>
struct WarpRingStage {  // one warp's stage: [tensor][i][lane] chunks (conflict-free), then stats
  uint4 x[ITERS][32], dy[ITERS][32], dd[ITERS][32];
  float2 st[32];
};
template <int ITERS>
constexpr size_t warp_ring_smem(int C) {
  return size_t(kWarpRingWarps) * kWarpRingStages * sizeof(WarpRingStage<ITERS>) + size_t(C) * sizeof(float);
}

template <int ITERS, bool PARAM>
__global__ void __launch_bounds__(kWarpRingWarps * 32, 2)
    norm_bwd_warp_ring_kernel(bf16* dinp, bool accumulate, float* scratch, const bf16* dout, const bf16* inp,
                              const bf16* gain, const float* mean_in, const float* rstd_in, int N, int C,
                              bool layer_norm) {
  extern __shared__ __align__(16) unsigned char smem[];
  auto* ring = reinterpret_cast<WarpRingStage<ITERS>*>(smem);  // [warps][stages]
  float* sgain = reinterpret_cast<float*>(ring + kWarpRingWarps * kWarpRingStages);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int c = threadIdx.x; c < C; c += blockDim.x) sgain[c] = gain ? to_f32(gain[c]) : 1.f;
  __syncthreads();
  WarpRingStage<ITERS>* const mine = ring + warp * kWarpRingStages;
  auto gain8 = [&](int c, float (&gn)[8]) {  // the gain of columns c.. (fp32, shared memory)
    *reinterpret_cast<float4*>(gn) = *reinterpret_cast<const float4*>(sgain + c);
    *reinterpret_cast<float4*>(gn + 4) = *reinterpret_cast<const float4*>(sgain + c + 4);
  };
  const float inv_c = 1.f / float(C);
  LaneParamSums<PARAM ? ITERS : 1> ps;
  // Row `row` into stage s; one commit group per call (empty past N), so the counts stay uniform.
  auto issue = [&](int64_t row, int s) {
    if (row < N) {
      WarpRingStage<ITERS>& st = mine[s];
#pragma unroll
      for (int i = 0; i < ITERS; ++i) {
        const int c = lane * 8 + 256 * i;
        if (c < C) {
          const int64_t off = row * C + c;
          tiles::cp_async16(&st.x[i][lane], inp + off, true);
          tiles::cp_async16(&st.dy[i][lane], dout + off, true);
          if (accumulate) tiles::cp_async16(&st.dd[i][lane], dinp + off, true);
        }
      }
      if (layer_norm) cp_async4(&st.st[lane].x, mean_in + row);
      cp_async4(&st.st[lane].y, rstd_in + row);
    }
    tiles::cp_async_commit();
  };
  const int64_t stride = int64_t(gridDim.x) * kWarpRingWarps;
  int64_t row = int64_t(blockIdx.x) * kWarpRingWarps + warp;
  issue(row, 0);
  for (int s = 0; row < N; row += stride, s ^= 1) {
    issue(row + stride, s ^ 1);  // the stage this lane read in the previous iteration
    tiles::cp_async_wait<1>();
    const WarpRingStage<ITERS>& st = mine[s];
    const float2 stats = st.st[lane];
    const float rstd = stats.y, shift = layer_norm ? -stats.x * rstd : 0.f;
    // Pass 1: the row sums of g = dout·gain and g·xhat, in two partial chains each.
    float sg[2] = {0.f, 0.f}, sgx[2] = {0.f, 0.f};
#pragma unroll
    for (int i = 0; i < ITERS; ++i) {
      const int c = lane * 8 + 256 * i;
      if (c >= C) continue;
      float x[8], dy[8], gn[8];
      unpack8(st.x[i][lane], x), unpack8(st.dy[i][lane], dy);
      gain8(c, gn);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float g = dy[j] * gn[j];
        sg[j & 1] += g;
        sgx[j & 1] = fmaf(g, fmaf(x[j], rstd, shift), sgx[j & 1]);
      }
    }
    const float mg = layer_norm ? warp_sum(sg[0] + sg[1]) * inv_c : 0.f;
    const float mgx = warp_sum(sgx[0] + sgx[1]) * inv_c;
    // d = rstd·(g - mean(g) - xh·mean(g·xh)) = rstd·g + xh·cx + c0.
    const float c0 = -rstd * mg, cx = -rstd * mgx;
    // Pass 2: x and dout again from the ring, the gradient out.
#pragma unroll
    for (int i = 0; i < ITERS; ++i) {
      const int c = lane * 8 + 256 * i;
      if (c >= C) continue;
      float x[8], dy[8], gn[8], vd[8];
      unpack8(st.x[i][lane], x), unpack8(st.dy[i][lane], dy);
      if (accumulate) unpack8(st.dd[i][lane], vd);
      gain8(c, gn);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float xh = fmaf(x[j], rstd, shift);
        const float d = fmaf(rstd, dy[j] * gn[j], fmaf(xh, cx, c0));
        vd[j] = accumulate ? vd[j] + d : d;
        if constexpr (PARAM) {
          ps.g[i][j] = fmaf(dy[j], xh, ps.g[i][j]);
          ps.b[i][j] += dy[j];
        }
      }
      if constexpr (PARAM) store8_summed(dinp + row * C + c, vd, ps.s[i]);  // dsum: of dinp as stored
      else store_w<8>(dinp + row * C + c, vd);
    }
  }
  if constexpr (PARAM) {
    tiles::cp_async_wait<0>();  // only empty groups are left, but the ring's memory is reused
    __syncthreads();
    write_param_partial<ITERS>(reinterpret_cast<float*>(smem), scratch, ps, C);
  }
}

// 16-byte accesses when every row of every given tensor starts 16-byte aligned.
bool rows_aligned16(int C, std::initializer_list<const void*> ptrs) {
  if (C % 8 != 0) return false;
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

// dgain[c] += Σ_b scratch[b][0][c]; dbias[c] += Σ_b scratch[b][1][c]; dsum[c] += Σ_b
// scratch[b][2][c]. Block (8, 32) per 8 columns of the 3C partials (32-byte row segments; 3C/8
// blocks, enough to spread over the SMs): thread row y sums blocks y, y+32, ... in order, then
// thread row 0 adds the 32 sums in order, so the result is the same on every run.
__global__ void norm_param_reduce_kernel(float* dgain, float* dbias, float* dsum, const float* scratch, int n_block,
                                         int C) {
  __shared__ float part[32][9];
  const int c = blockIdx.x * 8 + threadIdx.x;  // over 3C: gain, bias, then sum partials
  const bool wanted = c < C || (c < 2 * C && dbias) || (c >= 2 * C && c < 3 * C && dsum);
  float s = 0.f;
  if (wanted)
    for (int b = threadIdx.y; b < n_block; b += 32) s += scratch[int64_t(b) * 3 * C + c];
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y != 0 || !wanted) return;
  float t = 0.f;
  for (int y = 0; y < 32; ++y) t += part[y][threadIdx.x];
  if (c < C) dgain[c] += t;
  else if (c < 2 * C) dbias[c - C] += t;
  else dsum[c - 2 * C] += t;
}

// The row backward kernels share one signature. The register backward for rows of C <= 256·ITERS,
// with or without the parameter sums.
using BwdKernel = void (*)(bf16*, bool, float*, const bf16*, const bf16*, const bf16*, const float*, const float*,
                          int, int, bool);
BwdKernel reg_kernel(int iters, bool param) {
  switch (iters) {
    case 1: return param ? norm_bwd_reg_kernel<1, true> : norm_bwd_reg_kernel<1, false>;
    case 2: return param ? norm_bwd_reg_kernel<2, true> : norm_bwd_reg_kernel<2, false>;
    case 3: return param ? norm_bwd_reg_kernel<3, true> : norm_bwd_reg_kernel<3, false>;
    default: return param ? norm_bwd_reg_kernel<4, true> : norm_bwd_reg_kernel<4, false>;
  }
}

// The ring backward for C <= 256·NWG, with or without the parameter sums.
BwdKernel ring_kernel(int nwg, bool param) {
  switch (nwg) {
    case 1: return param ? norm_bwd_ring_kernel<1, true> : norm_bwd_ring_kernel<1, false>;
    case 2: return param ? norm_bwd_ring_kernel<2, true> : norm_bwd_ring_kernel<2, false>;
    case 3: return param ? norm_bwd_ring_kernel<3, true> : norm_bwd_ring_kernel<3, false>;
    default: return param ? norm_bwd_ring_kernel<4, true> : norm_bwd_ring_kernel<4, false>;
  }
}

// The warp-ring backward for C <= 256·ITERS (ITERS <= kWarpRingMaxIters), with or without the
// parameter sums, and its shared memory.
static_assert(kWarpRingMaxIters == 3, "warp_ring_kernel and warp_ring_smem_of have a case for each ITERS");
BwdKernel warp_ring_kernel(int iters, bool param) {
  switch (iters) {
    case 1: return param ? norm_bwd_warp_ring_kernel<1, true> : norm_bwd_warp_ring_kernel<1, false>;
    case 2: return param ? norm_bwd_warp_ring_kernel<2, true> : norm_bwd_warp_ring_kernel<2, false>;
    default: return param ? norm_bwd_warp_ring_kernel<3, true> : norm_bwd_warp_ring_kernel<3, false>;
  }
}
size_t warp_ring_smem_of(int iters, int C) {
  switch (iters) {
    case 1: return warp_ring_smem<1>(C);
    case 2: return warp_ring_smem<2>(C);
    default: return warp_ring_smem<3>(C);
  }
}

// Blocks of the backward's grid: as many as run at once (at most kNormBwdBlocks), so that no
// second wave leaves SMs idle at the end.
int bwd_grid(const void* kernel, int threads, size_t smem) {
  int per_sm = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
  return std::max(1, std::min(kNormBwdBlocks, per_sm * cuda::sm_count()));
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
  const bool aligned = rows_aligned16(C, {res_out, out, res_in, branch, gain, bias});
  auto kernel = aligned ? residual_norm_fwd_kernel<8> : residual_norm_fwd_kernel<1>;
  if (aligned && C <= 256 * kNormRegIters) {
    switch ((C + 255) / 256) {
      case 1: kernel = residual_norm_fwd_reg_kernel<1>; break;
      case 2: kernel = residual_norm_fwd_reg_kernel<2>; break;
      case 3: kernel = residual_norm_fwd_reg_kernel<3>; break;
      default: kernel = residual_norm_fwd_reg_kernel<4>; break;
    }
  }
  kernel<<<grid, kWarpsFwd * 32, 0, stream>>>(res_out, out, mean, rstd, res_in, branch, gain, bias, N, C, eps, ln);
  CUDA_CHECK_LAUNCH();
}

void norm_bwd(bf16* dinp, bool accumulate, float* dgain, float* dbias, float* dsum, float* scratch,
              const bf16* dout, const bf16* inp, const bf16* gain, const float* mean,
              const float* rstd, int N, int C, NormKind kind, cudaStream_t stream, NormBwdKernel which) {
  if (N <= 0) return;
  const bool ln = kind == NormKind::LayerNorm;
  const bool want_param = dgain != nullptr;
  PG_CHECK(!want_param || scratch, "norm_bwd: parameter gradients need scratch");
  PG_CHECK(!((dbias || dsum) && !want_param), "norm_bwd: dbias or dsum without dgain");
  int n_block = kNormBwdBlocks;
  const bool aligned = rows_aligned16(C, {dinp, dout, inp, gain});
  if (which == NormBwdKernel::WarpRing && aligned && C >= 256 && C <= 256 * kWarpRingMaxIters) {
    const int iters = (C + 255) / 256;
    const BwdKernel kernel = warp_ring_kernel(iters, want_param);
    const void* fn = reinterpret_cast<const void*>(kernel);
    const size_t smem = warp_ring_smem_of(iters, C);
    set_smem_once(fn, int(smem), true);
    n_block = int(std::min<int64_t>(bwd_grid(fn, kWarpRingWarps * 32, smem),
                                    (int64_t(N) + kWarpRingWarps - 1) / kWarpRingWarps));
    kernel<<<n_block, kWarpRingWarps * 32, smem, stream>>>(dinp, accumulate, scratch, dout, inp, gain, mean, rstd, N,
                                                           C, ln);
  } else if (aligned && C >= 256 && C <= 256 * kNormRegIters) {
    // Rows of at least a warp's 256 columns (QK-norm's heads of 64 or 128 would leave most of a
    // group idle: they keep the register kernel).
    const int nwg = (C + 255) / 256;
    const BwdKernel kernel = ring_kernel(nwg, want_param);
    const void* fn = reinterpret_cast<const void*>(kernel);
    set_smem_once(fn, int(kRingSmem), true);
    const int groups = kRingThreads / (32 * nwg);
    n_block = int(std::min<int64_t>(bwd_grid(fn, kRingThreads, kRingSmem), (int64_t(N) + groups - 1) / groups));
    kernel<<<n_block, kRingThreads, kRingSmem, stream>>>(dinp, accumulate, scratch, dout, inp, gain, mean, rstd, N,
                                                         C, ln);
  } else if (aligned && C <= 256 * kNormRegIters) {
    const int iters = (C + 255) / 256;
    const BwdKernel kernel = reg_kernel(iters, want_param);
    const size_t smem = want_param ? size_t(3) * C * sizeof(float) : 0;
    n_block = bwd_grid(reinterpret_cast<const void*>(kernel), kNormBwdWarps * 32, smem);
    kernel<<<n_block, kNormBwdWarps * 32, smem, stream>>>(dinp, accumulate, scratch, dout, inp, gain, mean, rstd, N,
                                                          C, ln);
  } else {
    // Shared memory holds 3·C floats per warp; up to 4 warps within the default 48 KB.
    const size_t per_warp = size_t(3) * C * sizeof(float);
    int n_warp = kNormBwdWarps;
    if (want_param) {
      while (n_warp > 1 && n_warp * per_warp > 48 * 1024) --n_warp;
      PG_CHECK(per_warp <= 48 * 1024, "norm_bwd: C too large for the parameter-gradient partials");
    }
    const size_t smem = want_param ? n_warp * per_warp : 0;
    const auto kernel = rows_aligned16(C, {dinp, dout, inp, gain}) ? norm_bwd_kernel<8> : norm_bwd_kernel<1>;
    kernel<<<n_block, n_warp * 32, smem, stream>>>(dinp, accumulate, scratch, want_param, dout, inp, gain, mean,
                                                   rstd, N, C, ln);
  }
  CUDA_CHECK_LAUNCH();
  if (want_param) {
    norm_param_reduce_kernel<<<unsigned((3 * C + 7) / 8), dim3(8, 32), 0, stream>>>(dgain, dbias, dsum, scratch,
                                                                                    n_block, C);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace pg::kernels
