// Causal flash attention, forward and backward (FlashAttention-2 scheme) on bf16 mma.sync.
//
// Math, per (batch b, head h), with S = scale·q·kᵀ masked to s <= t:
//   forward   P = softmax_rows(S), out = P·v, lse_t = log Σ_s exp S[t,s]. Query tiles are
//             independent; each walks its key tiles keeping, per row, the running max m, the
//             running sum l and the unnormalised output o (online softmax: on a new tile with
//             max m', o and l are multiplied by exp(m - m')). Exponentials are exp2 of
//             log2e-scaled scores.
//   backward  P = exp(S - lse) is recomputed tile by tile from q, k and lse; with
//             D_t = Σ_i dout[t,i]·out[t,i] (= Σ_s P[t,s]·dP[t,s]):
//               dv = Pᵀ·dout, dP = dout·vᵀ, dS = P ∘ (dP - D), dk = scale·dSᵀ·q, dq = scale·dS·k.
//             Key tiles are independent (dk, dv stay in registers); dq collects contributions
//             from every key tile with 16-byte fp32 atomics into a workspace, then one pass
//             scales and rounds it. Those atomics take a quarter of the backward's time at
//             GPT-2's shape (bench/RESULTS.md, 2026-12-02); their number falls with the key
//             tile, hence 128 keys per block for hs = 64 and 128.
//
// Kernels (blocks of 4 warps unless said). The grids put the tiles of one (b, h) side by side,
// so that its k, v (forward) or q, dout (backward) stay in L2 while they run (ordered the other
// way, ~400 heads in flight overflowed L2 and doubled the time at B=64), heaviest tile first:
//   attention_fwd_kernel<F>    grid (ceil(T/R), B·NH), R = 16·MA·4 query rows per block (MA = 2
//                              m16 atoms per warp for hs = 32, 1 for hs = 128 to fit its
//                              registers); block x takes query tile nq-1-x, warp w rows
//                              16·MA·w... Shared: q tile, two k and two v tiles of 64 keys
//                              (cp.async double buffer). Writes out, lse.
//   attention_fwd_wg_kernel    hs = 64 on warpgroup MMA (kernels/wgmma.cuh): the same grid and
//                              tiles with R = 128, two warpgroups of 64 rows, 8 warps.
//   attention_bwd_pre_kernel   one thread per 8 channels of a (token, head): D, and zeroes the
//                              dq accumulator.
//   attention_bwd_kernel<F>    grid (ceil(T/KT), B·NH), KT = 16·KA·NW keys per block of NW
//                              warps; block x takes key tile x, warp w its keys 16·KA·w.. and
//                              walks query tiles of BM rows. hs = 64: NW = 4, KA = 2 m16 atoms
//                              (sharing every q and dout fragment read), BM = 32; hs = 128:
//                              NW = 8, KA = 1, BM = 64; hs = 32: NW = 4, KA = 1, BM = 64. Shared:
//                              k, v tiles, two q and two dout tiles, dSᵀ [KT][BM], lse, D.
//   attention_bwd_dq_kernel    dq = bf16(scale·accumulator), one thread per 8 elements.
// Pointer layouts are in attention.cuh. Workspace: dq accumulator fp32 [B,T,NH,hs] (contiguous),
// then D fp32 [B,NH,T].
#include <cmath>
#include <stdexcept>
#include <string>

#include "backend/cuda/check.hpp"
#include "kernels/attention.cuh"
#include "kernels/attention_tiles.cuh"
#include "kernels/common.cuh"
#include "kernels/wgmma.cuh"

namespace pg::kernels {
namespace {

using namespace tiles;

// ---- forward ------------------------------------------------------------------------------------

// One key tile of the online softmax for the two rows a lane holds in one m16 atom (rows row0 + g
// and row0 + g + 8, g = lane/4; the tile's keys key0 + 8·nt + 2c + {0, 1}, c = lane%4): masks the
// keys after the row when `diag` (only tiles reaching past the atom's first row have such keys;
// keys >= T lie beyond every valid row), updates the running max, turns s into the unnormalised
// probabilities in place and returns the factor alpha by which the output accumulators and the
// running sum are to be scaled, and the tile's row sums (this lane's columns only: the quad is
// summed at the end). The max is taken on the raw scores (scale > 0) and kept in the log2
// domain, so p = 2^(s·scale·log2e - m) is one FFMA and one ex2. The pipelined forward applies
// alpha once the previous tile's P·v is done; softmax_tile applies it at once.
template <int NT>
__device__ __forceinline__ void softmax_tile_deferred(float (&s)[NT][4], float (&row_max)[2], float (&alpha)[2],
                                                      float (&tile_sum)[2], bool diag, int key0, int row0,
                                                      float scale_log2) {
  const int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
  float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if (diag) {
        const int key = key0 + nt * 8 + 2 * c + (e & 1);
        const int row = row0 + g + (e >> 1) * 8;
        if (key > row) s[nt][e] = -INFINITY;
      }
      tile_max[e >> 1] = fmaxf(tile_max[e >> 1], s[nt][e]);
    }
  }
  float sub[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
    tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
    const float m_new = fmaxf(row_max[r], tile_max[r] * scale_log2);
    sub[r] = m_new == -INFINITY ? 0.f : m_new;  // a row with no key yet keeps o = l = 0
    alpha[r] = ex2(row_max[r] - sub[r]);
    row_max[r] = m_new;
    tile_sum[r] = 0.f;
  }
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float p = ex2(fmaf(s[nt][e], scale_log2, -sub[e >> 1]));
      s[nt][e] = p;
      tile_sum[e >> 1] += p;
    }
  }
}

// Applies softmax_tile_deferred's alpha: the output accumulators and the running sum scaled by
// the max's change, the tile's sums added.
template <int OT>
__device__ __forceinline__ void softmax_rescale(float (&o)[OT][4], float (&row_sum)[2], const float (&alpha)[2],
                                                const float (&tile_sum)[2]) {
#pragma unroll
  for (int r = 0; r < 2; ++r) row_sum[r] = row_sum[r] * alpha[r] + tile_sum[r];
#pragma unroll
  for (int dt = 0; dt < OT; ++dt) {
    o[dt][0] *= alpha[0];
    o[dt][1] *= alpha[0];
    o[dt][2] *= alpha[1];
    o[dt][3] *= alpha[1];
  }
}

template <int NT, int OT>
__device__ __forceinline__ void softmax_tile(float (&s)[NT][4], float (&o)[OT][4], float (&row_max)[2],
                                             float (&row_sum)[2], bool diag, int key0, int row0,
                                             float scale_log2) {
  float alpha[2], tile_sum[2];
  softmax_tile_deferred<NT>(s, row_max, alpha, tile_sum, diag, key0, row0, scale_log2);
  softmax_rescale(o, row_sum, alpha, tile_sum);
}

// A forward block: NW warps of MA m16 atoms (16·MA query rows each; the MA atoms share every k
// and v fragment read from shared memory), walking key tiles of KT keys.
template <int HS_, int MA_, int NW_, int KT_>
struct FwdTiling {
  static constexpr int HS = HS_, MA = MA_, NW = NW_, KT = KT_;
  static constexpr int kThreads = 32 * NW, kRows = 16 * MA * NW;
};

template <class F>
struct FwdSmem {
  bf16 q[F::kRows * F::HS];
  bf16 k[2][F::KT * F::HS];
  bf16 v[2][F::KT * F::HS];
};

template <class F>
__global__ void __launch_bounds__(F::kThreads, 1) attention_fwd_kernel(
    bf16* __restrict__ out, float* __restrict__ lse, const bf16* __restrict__ q,
    const bf16* __restrict__ k, const bf16* __restrict__ v, int T, int NH, int64_t qkv_stride,
    int64_t out_stride, float scale_log2) {
  constexpr int HS = F::HS, kMA = F::MA, KT = F::KT, kRows = F::kRows, kNT = F::kThreads;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  auto& sm = *reinterpret_cast<FwdSmem<F>*>(smem_raw);
  const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int qtile = int(gridDim.x) - 1 - int(blockIdx.x);
  const int m0 = qtile * kRows;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
  const int64_t head0 = int64_t(b) * T * qkv_stride + int64_t(h) * HS;  // token 0 of (b, h)
  const int wrow0 = m0 + warp * 16 * kMA;                              // this warp's first row
  const int n_ktiles = (min(m0 + kRows, T) - 1) / KT + 1;              // causal: keys <= last row

  load_tile<kRows, HS, kNT>(sm.q, q + head0 + m0 * qkv_stride, qkv_stride, T - m0);
  load_tile<KT, HS, kNT>(sm.k[0], k + head0, qkv_stride, T);
  load_tile<KT, HS, kNT>(sm.v[0], v + head0, qkv_stride, T);
  cp_async_commit();

  // Per atom mi: rows wrow0 + 16·mi + g (r = 0) and + 8 (r = 1).
  float o[kMA][HS / 8][4] = {};
  float row_max[kMA][2], row_sum[kMA][2] = {};
  uint32_t qf[kMA][HS / 16][4];
#pragma unroll
  for (int mi = 0; mi < kMA; ++mi) row_max[mi][0] = row_max[mi][1] = -INFINITY;

  for (int j = 0; j < n_ktiles; ++j) {
    cp_async_wait<0>();
    __syncthreads();  // tile j landed for all; everyone is done reading buffer (j+1)&1
    if (j + 1 < n_ktiles) {
      const int n1 = (j + 1) * KT;
      load_tile<KT, HS, kNT>(sm.k[(j + 1) & 1], k + head0 + n1 * qkv_stride, qkv_stride, T - n1);
      load_tile<KT, HS, kNT>(sm.v[(j + 1) & 1], v + head0 + n1 * qkv_stride, qkv_stride, T - n1);
    }
    cp_async_commit();
    if (j == 0) {
#pragma unroll
      for (int mi = 0; mi < kMA; ++mi)
#pragma unroll
        for (int kk = 0; kk < HS / 16; ++kk)
          load_a<HS>(qf[mi][kk], sm.q, warp * 16 * kMA + mi * 16, kk * 16);
    }
    const int n0 = j * KT;
    if (n0 > wrow0 + 16 * kMA - 1) continue;  // every key of the tile is after this warp's rows
    const bf16* sk = sm.k[j & 1];
    const bf16* sv = sm.v[j & 1];

    // S = q·kᵀ for this warp's rows × KT keys.
    float s[kMA][KT / 8][4] = {};
#pragma unroll
    for (int kk = 0; kk < HS / 16; ++kk) {
#pragma unroll
      for (int np = 0; np < KT / 16; ++np) {
        uint32_t bfr[4];
        load_b_nk<HS>(bfr, sk, np * 16, kk * 16);
#pragma unroll
        for (int mi = 0; mi < kMA; ++mi) {
          mma2(s[mi][2 * np], s[mi][2 * np + 1], qf[mi][kk], bfr);
        }
      }
    }

    const bool diag = n0 + KT - 1 > wrow0;
#pragma unroll
    for (int mi = 0; mi < kMA; ++mi)
      softmax_tile(s[mi], o[mi], row_max[mi], row_sum[mi], diag, n0, wrow0 + mi * 16, scale_log2);

    // o += P·v, P taken from the accumulators as A fragments.
#pragma unroll
    for (int kk = 0; kk < KT / 16; ++kk) {
      uint32_t pa[kMA][4];
#pragma unroll
      for (int mi = 0; mi < kMA; ++mi) acc_to_a(pa[mi], s[mi][2 * kk], s[mi][2 * kk + 1]);
#pragma unroll
      for (int dp = 0; dp < HS / 16; ++dp) {
        uint32_t bfr[4];
        load_b_kn<HS>(bfr, sv, kk * 16, dp * 16);
#pragma unroll
        for (int mi = 0; mi < kMA; ++mi) {
          mma2(o[mi][2 * dp], o[mi][2 * dp + 1], pa[mi], bfr);
        }
      }
    }
  }

  // Normalise and write out (bf16) and lse (fp32, natural log).
#pragma unroll
  for (int mi = 0; mi < kMA; ++mi) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float l = row_sum[mi][r];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const int row = wrow0 + mi * 16 + g + r * 8;
      if (row >= T) continue;
      const float inv = 1.f / l;
      bf16* orow = out + (int64_t(b) * T + row) * out_stride + int64_t(h) * HS;
#pragma unroll
      for (int dt = 0; dt < HS / 8; ++dt) {
        *reinterpret_cast<uint32_t*>(orow + dt * 8 + 2 * c) =
            pack_bf16(o[mi][dt][2 * r] * inv, o[mi][dt][2 * r + 1] * inv);
      }
      if (c == 0) lse[int64_t(bh) * T + row] = row_max[mi][r] / kLog2e + logf(l);
    }
  }
}

// The end of a warpgroup forward for this warp's 16 rows (from wrow0, the wgmma accumulator
// layout): out = o / l in bf16 (out_bh: row 0 of this (b, h), rows out_stride apart) and
// lse = max / log2e + log l, l summed over the quad first; rows >= T are skipped.
template <int OT>
__device__ __forceinline__ void store_wg_rows(const float (&o)[OT][4], const float (&row_sum)[2], const float (&row_max)[2],
                                              int wrow0, int T, bf16* out_bh, int64_t out_stride, float* lse_bh) {
  const int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = row_sum[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int row = wrow0 + g + r * 8;
    if (row >= T) continue;
    const float inv = 1.f / l;
    bf16* orow = out_bh + int64_t(row) * out_stride;
#pragma unroll
    for (int dt = 0; dt < OT; ++dt)
      *reinterpret_cast<uint32_t*>(orow + dt * 8 + 2 * c) = pack_bf16(o[dt][2 * r] * inv, o[dt][2 * r + 1] * inv);
    if (c == 0) lse_bh[row] = row_max[r] / kLog2e + logf(l);
  }
}

// The hs = 64 forward on warpgroup MMA (wg::, sm_90a): two warpgroups of 64 query rows each
// (128 rows a block) walk 64-key tiles, k and v double-buffered through cp.async as above.
// S = q·kᵀ reads q and k straight from shared memory (no fragment loads); o += P·v takes P from
// registers and v from shared memory through the transpose flag. Each product is waited for
// before its accumulators are used, so the two warpgroups overlap each other, not themselves.
// The softmax is the mma.sync kernel's, on the same accumulator layout.
struct WgFwdSmem {
  alignas(1024) bf16 q[128 * 64];
  alignas(1024) bf16 k[2][64 * 64];
  alignas(1024) bf16 v[2][64 * 64];
};
constexpr int kWgFwdRows = 128, kWgFwdKeys = 64, kWgFwdThreads = 256;

__global__ void __launch_bounds__(kWgFwdThreads, 2) attention_fwd_wg_kernel(
    bf16* __restrict__ out, float* __restrict__ lse, const bf16* __restrict__ q,
    const bf16* __restrict__ k, const bf16* __restrict__ v, int T, int NH, int64_t qkv_stride,
    int64_t out_stride, float scale_log2) {
  constexpr int HS = 64, KT = kWgFwdKeys, kRows = kWgFwdRows, kNT = kWgFwdThreads;
  extern __shared__ unsigned char smem_raw[];
  // Descriptors need 1024-byte aligned tiles; the launch asks for 1 KB of slack.
  auto& sm = wg::aligned_smem<WgFwdSmem>(smem_raw);
  const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int qtile = int(gridDim.x) - 1 - int(blockIdx.x);
  const int m0 = qtile * kRows;
  const int wg_id = wg::warpgroup_index(), warp = (threadIdx.x >> 5) & 3;
  const int64_t head0 = int64_t(b) * T * qkv_stride + int64_t(h) * HS;
  const int wg_row0 = m0 + 64 * wg_id;    // this warpgroup's first row
  const int wrow0 = wg_row0 + 16 * warp;  // this warp's first row
  const int n_ktiles = (min(m0 + kRows, T) - 1) / KT + 1;

  load_tile<kRows, HS, kNT>(sm.q, q + head0 + m0 * qkv_stride, qkv_stride, T - m0);
  load_tile<KT, HS, kNT>(sm.k[0], k + head0, qkv_stride, T);
  load_tile<KT, HS, kNT>(sm.v[0], v + head0, qkv_stride, T);
  cp_async_commit();

  float o[HS / 8][4] = {};
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};
  const bf16* sq = sm.q + 64 * wg_id * HS;

  for (int j = 0; j < n_ktiles; ++j) {
    cp_async_wait<0>();
    wg::fence_proxy_async();  // the landed tiles, for the wgmma reads after the barrier
    __syncthreads();
    if (j + 1 < n_ktiles) {
      const int n1 = (j + 1) * KT;
      load_tile<KT, HS, kNT>(sm.k[(j + 1) & 1], k + head0 + n1 * qkv_stride, qkv_stride, T - n1);
      load_tile<KT, HS, kNT>(sm.v[(j + 1) & 1], v + head0 + n1 * qkv_stride, qkv_stride, T - n1);
    }
    cp_async_commit();
    const int n0 = j * KT;
    if (n0 > wg_row0 + 63) continue;  // every key after this warpgroup's rows (uniform in it)
    const bf16* sk = sm.k[j & 1];
    const bf16* sv = sm.v[j & 1];

    float s[KT / 8][4];
    wg::fence();
#pragma unroll
    for (int kk = 0; kk < HS / 16; ++kk)
      wg::mma_ss<0>(s, wg::smem_desc(sq + kk * 16, 16, 1024), wg::smem_desc(sk + kk * 16, 16, 1024), kk > 0);
    wg::commit();
    wg::wait<0>();
    wg::fence_acc(s);

    softmax_tile(s, o, row_max, row_sum, n0 + KT - 1 > wrow0, n0, wrow0, scale_log2);
    uint32_t pa[KT / 16][4];
#pragma unroll
    for (int kk = 0; kk < KT / 16; ++kk) acc_to_a(pa[kk], s[2 * kk], s[2 * kk + 1]);
    wg::fence();
#pragma unroll
    for (int kk = 0; kk < KT / 16; ++kk)
      wg::mma_rs<1>(o, pa[kk], wg::smem_desc(sv + kk * 16 * HS, 8192, 1024), 1);
    wg::commit();
    wg::wait<0>();
    wg::fence_acc(o);
  }

  store_wg_rows(o, row_sum, row_max, wrow0, T, out + int64_t(b) * T * out_stride + int64_t(h) * HS, out_stride,
                lse + int64_t(bh) * T);
}

// The forward on warpgroup MMA with the softmax of each key tile overlapping the previous tile's
// P·v (AttentionFwdKernel::WgmmaPipe, and hs = 128's Best; 64-key tiles; hs = 64 or 128, the latter
// as two 64-column halves: k-blocks of q and k for S, panels of v and chunks of o for P·v). Two
// warpgroups of 64 query rows (128 a block) walk the key tiles together; per tile j a warpgroup
//   issues S(j) = q·k(j)ᵀ and, behind it, o += P(j-1)·v(j-1),
//   waits for S(j) only, and runs the softmax of tile j (running max, exponentials, row sums),
//   waits for the P·v, then scales o and the running sum by the max's change and rounds P(j) to
//   the bf16 A fragments of the next P·v.
// v(j-1) is still read while tile j+1 loads, so k and v take three stages: tile j+1 goes into
// stage (j+1) % 3 once the barrier of tile j has seen every warpgroup done with tile j-2's
// products (each waits for them within tile j-1). Both warpgroups take the same tiles (the block's
// last ones hold the diagonal; a warp's keys after all its rows come out as p = 0), so the
// barriers and the wgmma are uniform.
constexpr int kWgPipeKeys = 64;  // 128-key tiles measured 29% slower (bench/RESULTS.md)
template <int HS>
struct WgFwdPipeSmem {
  static constexpr int KT = kWgPipeKeys;
  static constexpr int kHalves = HS / 64;
  alignas(1024) bf16 q[kHalves][128 * 64];
  alignas(1024) bf16 k[3][kHalves][KT * 64];
  alignas(1024) bf16 v[3][kHalves][KT * 64];
};

template <int HS, int kMinBlocks>
__global__ void __launch_bounds__(kWgFwdThreads, kMinBlocks) attention_fwd_pipe_kernel(
    bf16* __restrict__ out, float* __restrict__ lse, const bf16* __restrict__ q,
    const bf16* __restrict__ k, const bf16* __restrict__ v, int T, int NH, int64_t qkv_stride,
    int64_t out_stride, float scale_log2) {
  constexpr int kRows = kWgFwdRows, kNT = kWgFwdThreads, KT = kWgPipeKeys, NT = KT / 8, kHalves = HS / 64;
  static_assert(HS == 64 || HS == 128, "head size in 64-column halves");
  extern __shared__ unsigned char smem_raw[];
  auto& sm = wg::aligned_smem<WgFwdPipeSmem<HS>>(smem_raw);
  const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int qtile = int(gridDim.x) - 1 - int(blockIdx.x);
  const int m0 = qtile * kRows;
  const int wg_id = wg::warpgroup_index(), warp = (threadIdx.x >> 5) & 3;
  const int64_t head0 = int64_t(b) * T * qkv_stride + int64_t(h) * HS;
  const int wrow0 = m0 + 64 * wg_id + 16 * warp;  // this warp's first row
  const int n_tiles = (min(m0 + kRows, T) - 1) / KT + 1;

  auto load_kv = [&](int j) {
    const int n1 = j * KT, st = j % 3;
#pragma unroll
    for (int x = 0; x < kHalves; ++x) {
      load_tile<KT, 64, kNT>(sm.k[st][x], k + head0 + n1 * qkv_stride + 64 * x, qkv_stride, T - n1);
      load_tile<KT, 64, kNT>(sm.v[st][x], v + head0 + n1 * qkv_stride + 64 * x, qkv_stride, T - n1);
    }
  };
  // S(j) into s, one commit group; k step kk lies in k-block kk / 4 of q and k.
  auto issue_s = [&](float (&s)[NT][4], int j) {
    wg::fence();
#pragma unroll
    for (int kk = 0; kk < HS / 16; ++kk) {
      const bf16* sq = sm.q[kk / 4] + 64 * wg_id * 64 + (kk % 4) * 16;
      const bf16* sk = sm.k[j % 3][kk / 4] + (kk % 4) * 16;
      wg::mma_ss<0>(s, wg::smem_desc(sq, 16, 1024), wg::smem_desc(sk, 16, 1024), kk > 0);
    }
    wg::commit();
  };
  // o += P(j)·v(j), one commit group; o's columns 64x.. from v's panel x.
  auto issue_pv = [&](float (&o)[HS / 8][4], const uint32_t (&pa)[KT / 16][4], int j) {
    wg::fence();
#pragma unroll
    for (int kk = 0; kk < KT / 16; ++kk) {
      wg::mma_rs<1, 0>(o, pa[kk], wg::smem_desc(sm.v[j % 3][0] + kk * 16 * 64, 8192, 1024), 1);
      if constexpr (kHalves == 2)
        wg::mma_rs<1, 8>(o, pa[kk], wg::smem_desc(sm.v[j % 3][1] + kk * 16 * 64, 8192, 1024), 1);
    }
    wg::commit();
  };

#pragma unroll
  for (int x = 0; x < kHalves; ++x)
    load_tile<kRows, 64, kNT>(sm.q[x], q + head0 + m0 * qkv_stride + 64 * x, qkv_stride, T - m0);
  load_kv(0);
  cp_async_commit();
  if (n_tiles > 1) load_kv(1);
  cp_async_commit();  // (possibly empty)
  cp_async_wait<1>();  // q and tile 0
  wg::fence_proxy_async();
  __syncthreads();

  float o[HS / 8][4] = {}, s[NT][4];
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f}, alpha[2], tile_sum[2];
  uint32_t pa[KT / 16][4];

  issue_s(s, 0);
  wg::wait<0>();
  wg::fence_acc(s);
  softmax_tile_deferred(s, row_max, alpha, tile_sum, KT - 1 > wrow0, 0, wrow0, scale_log2);
  row_sum[0] = tile_sum[0], row_sum[1] = tile_sum[1];
#pragma unroll
  for (int kk = 0; kk < KT / 16; ++kk) acc_to_a(pa[kk], s[2 * kk], s[2 * kk + 1]);

  for (int j = 1; j < n_tiles; ++j) {
    cp_async_wait<0>();       // tile j
    wg::fence_proxy_async();  // for the wgmma reads after the barrier
    __syncthreads();          // tile j visible; every warpgroup done with tile j-2's stage
    if (j + 1 < n_tiles) load_kv(j + 1);
    cp_async_commit();
    issue_s(s, j);
    issue_pv(o, pa, j - 1);
    wg::wait<1>();  // S(j); P(j-1)·v(j-1) may still run
    wg::fence_acc(s);
    const int n0 = j * KT;
    softmax_tile_deferred(s, row_max, alpha, tile_sum, n0 + KT - 1 > wrow0, n0, wrow0, scale_log2);
    wg::wait<0>();  // P(j-1)·v(j-1): o and pa are free
    wg::fence_acc(o);
    softmax_rescale(o, row_sum, alpha, tile_sum);
#pragma unroll
    for (int kk = 0; kk < KT / 16; ++kk) acc_to_a(pa[kk], s[2 * kk], s[2 * kk + 1]);
  }
  issue_pv(o, pa, n_tiles - 1);
  wg::wait<0>();
  wg::fence_acc(o);

  store_wg_rows(o, row_sum, row_max, wrow0, T, out + int64_t(b) * T * out_stride + int64_t(h) * HS, out_stride,
                lse + int64_t(bh) * T);
}

// ---- backward -----------------------------------------------------------------------------------

// D[b,h,t] = Σ_i dout·out over the head's hs channels; zeroes the dq accumulator row (unless
// dq_acc is null). One thread per 8 channels (16-byte loads), the hs/8 threads of a (token, head)
// row adjacent in one warp.
// Indices in 32 bits (the caller checks that they fit) and hs/8 a power of two: no 64-bit
// divisions, which would cost more instructions than the thread's 32 bytes of loads are worth.
__global__ void attention_bwd_pre_kernel(float* __restrict__ dq_acc, float* __restrict__ D,
                                         const bf16* __restrict__ dout,
                                         const bf16* __restrict__ out, uint32_t n_chunks, int T,
                                         int NH, int hs, int64_t out_stride) {
  const uint32_t j = blockIdx.x * blockDim.x + threadIdx.x;  // 8-element chunk of dq_acc
  const bool valid = j < n_chunks;
  const uint32_t per_token = uint32_t(NH * hs) / 8, within = j % per_token;  // chunk within the token
  const uint32_t bt = j / per_token;                                         // b·T + t
  const int chunk_shift = __ffs(hs / 8) - 1;                                // log2(hs / 8)
  const int h = int(within >> chunk_shift), col = int(within & ((1u << chunk_shift) - 1)) * 8;
  float acc = 0.f;
  if (valid) {
    const int64_t off = int64_t(bt) * out_stride + int64_t(h) * hs + col;
    const uint4 d8 = *reinterpret_cast<const uint4*>(dout + off);
    const uint4 o8 = *reinterpret_cast<const uint4*>(out + off);
    const uint32_t dw[4] = {d8.x, d8.y, d8.z, d8.w}, ow[4] = {o8.x, o8.y, o8.z, o8.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 d2 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&dw[e]));
      const float2 o2 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&ow[e]));
      acc += d2.x * o2.x + d2.y * o2.y;
    }
    if (dq_acc) {
      const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
      float* dst = dq_acc + int64_t(j) * 8;
      *reinterpret_cast<float4*>(dst) = zero;
      *reinterpret_cast<float4*>(dst + 4) = zero;
    }
  }
  for (int width = 1; width < hs / 8; width <<= 1) acc += __shfl_xor_sync(0xffffffffu, acc, width);
  if (valid && col == 0) {
    const uint32_t b = bt / uint32_t(T), t = bt - b * uint32_t(T);
    D[(int64_t(b) * NH + h) * T + t] = acc;
  }
}

__global__ void attention_bwd_dq_kernel(bf16* __restrict__ dq, const float* __restrict__ dq_acc,
                                        uint32_t n_chunks, int C, int64_t qkv_stride, float scale) {
  const uint32_t j = blockIdx.x * blockDim.x + threadIdx.x;  // 8-element chunk of dq_acc
  if (j >= n_chunks) return;
  const uint32_t per_token = uint32_t(C) / 8, bt = j / per_token, within = j - bt * per_token;
  const float4 x0 = *reinterpret_cast<const float4*>(dq_acc + int64_t(j) * 8);
  const float4 x1 = *reinterpret_cast<const float4*>(dq_acc + int64_t(j) * 8 + 4);
  uint4 packed;
  packed.x = pack_bf16(x0.x * scale, x0.y * scale);
  packed.y = pack_bf16(x0.z * scale, x0.w * scale);
  packed.z = pack_bf16(x1.x * scale, x1.y * scale);
  packed.w = pack_bf16(x1.z * scale, x1.w * scale);
  *reinterpret_cast<uint4*>(dq + int64_t(bt) * qkv_stride + within * 8) = packed;
}

// dq as attention_bwd_dq_kernel, by tiles of 128 tokens of one sequence (grid: tiles, B), with
// the tile's column sums of dq (fp32, scaled, before rounding) into the fused q/k/v bias's partial
// row b·tiles + tile, columns [0, C). Thread t takes 8 columns (t % (C/8)) of every R-th token
// (R = 256 / (C/8) rows at a time); the R rows' sums meet in shared memory.
__global__ void __launch_bounds__(256) attention_bwd_dq_sum_kernel(bf16* __restrict__ dq,
                                                                   const float* __restrict__ dq_acc,
                                                                   float* __restrict__ dbias_part, int T, int C,
                                                                   int64_t qkv_stride, float scale) {
  extern __shared__ float red[];  // [R][C]
  const int groups = C / 8, R = 256 / groups, cg = int(threadIdx.x) % groups, rl = int(threadIdx.x) / groups;
  const int b = blockIdx.y, t0 = int(blockIdx.x) * 128, t_end = min(t0 + 128, T);
  float sum[8] = {};
  if (rl < R) {
#pragma unroll 4
    for (int t = t0 + rl; t < t_end; t += R) {
      const int64_t bt = int64_t(b) * T + t;
      const float4 x0 = *reinterpret_cast<const float4*>(dq_acc + bt * C + cg * 8);
      const float4 x1 = *reinterpret_cast<const float4*>(dq_acc + bt * C + cg * 8 + 4);
      const float x[8] = {x0.x * scale, x0.y * scale, x0.z * scale, x0.w * scale,
                          x1.x * scale, x1.y * scale, x1.z * scale, x1.w * scale};
      *reinterpret_cast<uint4*>(dq + bt * qkv_stride + cg * 8) = pack8(x);
#pragma unroll
      for (int e = 0; e < 8; ++e) sum[e] += x[e];
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) red[rl * C + cg * 8 + e] = sum[e];
  }
  __syncthreads();
  for (int col = threadIdx.x; col < C; col += 256) {
    float s = 0.f;
    for (int r = 0; r < R; ++r) s += red[r * C + col];
    dbias_part[(int64_t(b) * gridDim.x + blockIdx.x) * 3 * C + col] = s;
  }
}

// A backward block: NW warps of KA m16 atoms (16·KA keys each; the KA atoms share every q and
// dout fragment read from shared memory), a key tile of KT = 16·KA·NW keys, walking query tiles
// of BM rows.
template <int HS_, int BM_, int NW_, int KA_>
struct BwdTiling {
  static constexpr int HS = HS_, BM = BM_, NW = NW_, KA = KA_;
  static constexpr int kThreads = 32 * NW, KT = 16 * KA * NW;
  // dq = dS·k over the BM × HS tile: warp (wm, wn) takes rows 16·wm.. and kDqCols columns.
  static constexpr int kWarpsM = BM / 16, kWarpsN = NW / kWarpsM, kDqCols = HS / kWarpsN;
  static_assert(NW % kWarpsM == 0 && kDqCols % 16 == 0, "dq tile split over the warps");
};

template <class F>
struct BwdSmem {
  bf16 k[F::KT * F::HS];
  bf16 v[F::KT * F::HS];
  bf16 q[2][F::BM * F::HS];
  bf16 dout[2][F::BM * F::HS];
  bf16 ds[F::KT * F::BM];  // dSᵀ: [key][query]
  alignas(16) float lse2[2][F::BM];  // lse·log2e, +inf for rows >= T (so P = 0 there)
  alignas(16) float D[2][F::BM];
};

// dst[row][col..] += the fp32 accumulators of one 16×8 C tile (rows row0 + g, row0 + g + 8;
// columns col0 + 2c, +1) as 16-byte atomics: each lane pair swaps halves so that the even lane
// holds 4 adjacent columns of row g and the odd lane 4 of row g + 8. Rows >= T are skipped.
__device__ __forceinline__ void atomic_add_c_tile(float* dst, int64_t row_stride, int row0,
                                                  int T, const float (&x)[4]) {
  const int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
  const bool odd = c & 1;
  const float s0 = odd ? x[0] : x[2], s1 = odd ? x[1] : x[3];
  const float y0 = __shfl_xor_sync(0xffffffffu, s0, 1), y1 = __shfl_xor_sync(0xffffffffu, s1, 1);
  const int row = row0 + g + (odd ? 8 : 0), col = 2 * (c & ~1);
  if (row >= T) return;
  const float4 val = odd ? make_float4(y0, y1, x[2], x[3]) : make_float4(x[0], x[1], y0, y1);
  atomicAdd(reinterpret_cast<float4*>(dst + int64_t(row) * row_stride + col), val);
}

template <class F>
__global__ void __launch_bounds__(F::kThreads, 1) attention_bwd_kernel(
    bf16* __restrict__ dk, bf16* __restrict__ dv, float* __restrict__ dq_acc,
    const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
    const bf16* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ D,
    int T, int NH, int64_t qkv_stride, int64_t out_stride, float scale, float scale_log2) {
  constexpr int HS = F::HS, BM = F::BM, KA = F::KA, KT = F::KT, kNT = F::kThreads;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  auto& sm = *reinterpret_cast<BwdSmem<F>*>(smem_raw);
  const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int n0 = int(blockIdx.x) * KT;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
  const int64_t head0 = int64_t(b) * T * qkv_stride + int64_t(h) * HS;
  const int64_t dhead0 = int64_t(b) * T * out_stride + int64_t(h) * HS;
  const float* lse_bh = lse + int64_t(bh) * T;
  const float* D_bh = D + int64_t(bh) * T;
  const int i_first = n0 / BM, n_qtiles = (T + BM - 1) / BM;
  const int wkey0 = warp * 16 * KA;  // this warp's first key within the tile
  const int key_w0 = n0 + wkey0;

  auto load_q_tile = [&](int i, int buf) {
    const int m0 = i * BM;
    load_tile<BM, HS, kNT>(sm.q[buf], q + head0 + m0 * qkv_stride, qkv_stride, T - m0);
    load_tile<BM, HS, kNT>(sm.dout[buf], dout + dhead0 + m0 * out_stride, out_stride, T - m0);
    for (int r = threadIdx.x; r < BM; r += kNT) {
      const bool valid = m0 + r < T;
      sm.lse2[buf][r] = valid ? lse_bh[m0 + r] * kLog2e : INFINITY;
      sm.D[buf][r] = valid ? D_bh[m0 + r] : 0.f;
    }
  };

  load_tile<KT, HS, kNT>(sm.k, k + head0 + n0 * qkv_stride, qkv_stride, T - n0);
  load_tile<KT, HS, kNT>(sm.v, v + head0 + n0 * qkv_stride, qkv_stride, T - n0);
  load_q_tile(i_first, 0);
  cp_async_commit();

  float dk_acc[KA][HS / 8][4] = {}, dv_acc[KA][HS / 8][4] = {};

  for (int i = i_first; i < n_qtiles; ++i) {
    const int buf = (i - i_first) & 1;
    cp_async_wait<0>();
    __syncthreads();
    if (i + 1 < n_qtiles) load_q_tile(i + 1, buf ^ 1);
    cp_async_commit();
    const bf16* sq = sm.q[buf];
    const bf16* sdo = sm.dout[buf];
    const int m0 = i * BM;

    // A warp whose keys all come after every query of the tile has P = dS = 0: it skips the
    // tile, and the dq product below skips its rows of dSᵀ (left stale) for the same reason.
    if (key_w0 <= m0 + BM - 1) {
      // Sᵀ = k·qᵀ (16·KA keys × BM queries per warp) and dPᵀ = v·doutᵀ.
      uint32_t pa[KA][BM / 16][4];  // Pᵀ as bf16 A fragments
      float dpt[KA][BM / 8][4] = {};
      {
        float st[KA][BM / 8][4] = {};
#pragma unroll
        for (int kk = 0; kk < HS / 16; ++kk) {
          uint32_t ka[KA][4], va[KA][4];
#pragma unroll
          for (int a = 0; a < KA; ++a) {
            load_a<HS>(ka[a], sm.k, wkey0 + 16 * a, kk * 16);
            load_a<HS>(va[a], sm.v, wkey0 + 16 * a, kk * 16);
          }
#pragma unroll
          for (int np = 0; np < BM / 16; ++np) {
            uint32_t bq[4], bd[4];
            load_b_nk<HS>(bq, sq, np * 16, kk * 16);
            load_b_nk<HS>(bd, sdo, np * 16, kk * 16);
#pragma unroll
            for (int a = 0; a < KA; ++a) {
              mma2(st[a][2 * np], st[a][2 * np + 1], ka[a], bq);
              mma2(dpt[a][2 * np], dpt[a][2 * np + 1], va[a], bd);
            }
          }
        }

        // Pᵀ = exp2(Sᵀ·scale·log2e - lse·log2e), zero where key > query; dSᵀ = Pᵀ ∘ (dPᵀ - D).
#pragma unroll
        for (int a = 0; a < KA; ++a) {
          const int key_a0 = key_w0 + 16 * a;
          const bool diag = key_a0 + 15 > m0;
#pragma unroll
          for (int nt = 0; nt < BM / 8; ++nt) {
            const float2 lse2 = *reinterpret_cast<const float2*>(&sm.lse2[buf][nt * 8 + 2 * c]);
            const float2 Dq = *reinterpret_cast<const float2*>(&sm.D[buf][nt * 8 + 2 * c]);
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int qcol = nt * 8 + 2 * c + (e & 1);
              float p = ex2(fmaf(st[a][nt][e], scale_log2, -((e & 1) ? lse2.y : lse2.x)));
              if (diag && key_a0 + g + (e >> 1) * 8 > m0 + qcol) p = 0.f;
              st[a][nt][e] = p;
              dpt[a][nt][e] = p * (dpt[a][nt][e] - ((e & 1) ? Dq.y : Dq.x));
            }
          }
#pragma unroll
          for (int kk = 0; kk < BM / 16; ++kk)
            acc_to_a(pa[a][kk], st[a][2 * kk], st[a][2 * kk + 1]);
        }
      }
      // dv += Pᵀ·dout and dk += dSᵀ·q (k = the BM queries); dSᵀ also goes to shared memory for
      // dq.
#pragma unroll
      for (int kk = 0; kk < BM / 16; ++kk) {
        uint32_t dsa[KA][4];
#pragma unroll
        for (int a = 0; a < KA; ++a) acc_to_a(dsa[a], dpt[a][2 * kk], dpt[a][2 * kk + 1]);
#pragma unroll
        for (int dp = 0; dp < HS / 16; ++dp) {
          uint32_t bd[4], bq[4];
          load_b_kn<HS>(bd, sdo, kk * 16, dp * 16);
          load_b_kn<HS>(bq, sq, kk * 16, dp * 16);
#pragma unroll
          for (int a = 0; a < KA; ++a) {
            mma2(dv_acc[a][2 * dp], dv_acc[a][2 * dp + 1], pa[a][kk], bd);
            mma2(dk_acc[a][2 * dp], dk_acc[a][2 * dp + 1], dsa[a], bq);
          }
        }
        // dsa's registers a0..a3 are rows (g, g+8) × query columns (2c, 2c+8) of this 16-query
        // block; store them as dSᵀ[key][query].
#pragma unroll
        for (int a = 0; a < KA; ++a) {
          const int kr = wkey0 + 16 * a + g, qc = kk * 16 + 2 * c;
          *reinterpret_cast<uint32_t*>(sm.ds + swz<BM>(kr, qc & ~7) + (qc & 7)) = dsa[a][0];
          *reinterpret_cast<uint32_t*>(sm.ds + swz<BM>(kr + 8, qc & ~7) + (qc & 7)) = dsa[a][1];
          *reinterpret_cast<uint32_t*>(sm.ds + swz<BM>(kr, (qc + 8) & ~7) + (qc & 7)) = dsa[a][2];
          *reinterpret_cast<uint32_t*>(sm.ds + swz<BM>(kr + 8, (qc + 8) & ~7) + (qc & 7)) =
              dsa[a][3];
        }
      }
    }
    __syncthreads();

    // dq[m0.., :] += dS·k: warp (wm, wn) takes query rows 16·wm.. and head columns kDqCols·wn..
    const int wm = warp % F::kWarpsM, wn = warp / F::kWarpsM;
    float dq_part[F::kDqCols / 8][4] = {};
#pragma unroll
    for (int kk = 0; kk < KT / 16; ++kk) {
      if (n0 + kk * 16 > m0 + wm * 16 + 15) break;  // keys after every row of the warp: dS = 0
      uint32_t a[4];
      load_a_t<BM>(a, sm.ds, kk * 16, wm * 16);
#pragma unroll
      for (int dp = 0; dp < F::kDqCols / 16; ++dp) {
        uint32_t bk[4];
        load_b_kn<HS>(bk, sm.k, kk * 16, wn * F::kDqCols + dp * 16);
        mma2(dq_part[2 * dp], dq_part[2 * dp + 1], a, bk);
      }
    }
    if (n0 > m0 + wm * 16 + 15) continue;  // nothing was added
    float* dq_tile = dq_acc + (int64_t(b) * T * NH + h) * HS + wn * F::kDqCols;
#pragma unroll
    for (int dt = 0; dt < F::kDqCols / 8; ++dt)
      atomic_add_c_tile(dq_tile + dt * 8, int64_t(NH) * HS, m0 + wm * 16, T, dq_part[dt]);
  }

  // dk = scale·Σ dSᵀ·q and dv, for this warp's 16·KA keys.
#pragma unroll
  for (int a = 0; a < KA; ++a) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int key = key_w0 + 16 * a + g + r * 8;
      if (key >= T) continue;
      bf16* dkr = dk + head0 + int64_t(key) * qkv_stride;
      bf16* dvr = dv + head0 + int64_t(key) * qkv_stride;
#pragma unroll
      for (int dt = 0; dt < HS / 8; ++dt) {
        *reinterpret_cast<uint32_t*>(dkr + dt * 8 + 2 * c) =
            pack_bf16(dk_acc[a][dt][2 * r] * scale, dk_acc[a][dt][2 * r + 1] * scale);
        *reinterpret_cast<uint32_t*>(dvr + dt * 8 + 2 * c) =
            pack_bf16(dv_acc[a][dt][2 * r], dv_acc[a][dt][2 * r + 1]);
      }
    }
  }
}

// The hs = 64 backward on warpgroup MMA (wg::, sm_90a). A block takes 128 keys, two warpgroups
// of 64 keys each, and walks query tiles of 128 rows (q, dout, lse and D double-buffered through
// cp.async). Per tile, each warpgroup takes the two halves of 64 queries in turn:
//   Sᵀ = k·qᵀ and dPᵀ = v·doutᵀ        mma_ss, both operands K-major (rows of 64 hs)
//   Pᵀ, dSᵀ                             registers, in the accumulator layout (rows = keys)
//   dv += Pᵀ·dout, dk += dSᵀ·q          mma_rs, A from registers, B = the dout or q half through
//                                       the transpose flag
//   dSᵀ                                 to shared memory, one [128 keys][64 queries] panel a half
// then, after a barrier, the dq of a half over all 128 keys, dq = dS·k, added to the fp32
// accumulator with 16-byte atomics (as many as the mma.sync kernel's per key and query):
// warpgroup w takes all 64 columns of half w,
//   dq = dS·k                           mma_ss m64n64, A = panel w, B = k (stored [key][hs]), both
//                                       through the transpose flag,
// warpgroup 0's right after half 0, warpgroup 1's after half 1, each while the other runs a half.
// Keys and queries tiles have the same size, so only the first query tile (the
// diagonal) masks. There warpgroup 1's keys all follow half 0's queries; it computes that half
// anyway (all masked, dSᵀ = 0), because a wgmma under a branch the compiler cannot prove uniform
// makes ptxas serialise every wgmma of the kernel (a wait after each); for the same reason dq
// always runs over all 128 keys. Each product is waited for before its results are read or its
// register operands change; the two warpgroups overlap each other's softmax and MMAs.
struct WgBwdSmem {
  alignas(1024) bf16 k[128 * 64];
  alignas(1024) bf16 v[128 * 64];
  alignas(1024) bf16 q[2][128 * 64];
  alignas(1024) bf16 dout[2][128 * 64];
  alignas(1024) bf16 ds[2][128 * 64];  // dSᵀ by query half: ds[hq][key][query - 64·hq]
  alignas(16) float lse[2][128];
  alignas(16) float D[2][128];
};
constexpr int kWgBwdKeys = 128, kWgBwdRows = 128, kWgBwdThreads = 256;
static_assert(kWgBwdKeys == 128, "the q/k/v bias's partial rows: attention_bwd_dq_sum_kernel's 128-token tiles");

__global__ void __launch_bounds__(kWgBwdThreads, 1) attention_bwd_wg_kernel(
    bf16* __restrict__ dk, bf16* __restrict__ dv, float* __restrict__ dq_acc,
    const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
    const bf16* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ D,
    float* __restrict__ dbias_part, float4* __restrict__ clear, int64_t clear_n4, int T, int NH,
    int64_t qkv_stride, int64_t out_stride, float scale, float scale_log2) {
  constexpr int HS = 64, KT = kWgBwdKeys, BM = kWgBwdRows, kNT = kWgBwdThreads;
  static_assert(KT == BM, "the diagonal is the first query tile only when keys and queries tile alike");
  extern __shared__ unsigned char smem_raw[];
  auto& sm = wg::aligned_smem<WgBwdSmem>(smem_raw);
  const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int n0 = int(blockIdx.x) * KT;
  const int wg_id = wg::warpgroup_index(), warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;
  const int g = lane >> 2, c = lane & 3;
  const int64_t head0 = int64_t(b) * T * qkv_stride + int64_t(h) * HS;
  const int64_t dhead0 = int64_t(b) * T * out_stride + int64_t(h) * HS;
  const float* lse_bh = lse + int64_t(bh) * T;
  const float* D_bh = D + int64_t(bh) * T;
  const int i_first = n0 / BM, n_qtiles = (T + BM - 1) / BM;
  const int key_wg0 = n0 + 64 * wg_id;     // this warpgroup's first key
  const int key_w0 = key_wg0 + 16 * warp;  // this warp's first key
  const bf16* sk_wg = sm.k + 64 * wg_id * HS;
  const bf16* sv_wg = sm.v + 64 * wg_id * HS;

  auto load_q_tile = [&](int i, int buf) {
    const int m0 = i * BM;
    load_tile<BM, HS, kNT>(sm.q[buf], q + head0 + m0 * qkv_stride, qkv_stride, T - m0);
    load_tile<BM, HS, kNT>(sm.dout[buf], dout + dhead0 + m0 * out_stride, out_stride, T - m0);
    // lse and D through cp.async too (no thread waits on a global load here); rows >= T get
    // zeros: their q and dout rows are zero as well, so P = 1 there but dP = D = 0 and dSᵀ = 0,
    // dv gains P·0, and their dq is never stored.
    static_assert(kNT == 2 * BM, "one thread per row of lse, one per row of D");
    const int r = threadIdx.x % BM;
    const bool valid = m0 + r < T;
    if (threadIdx.x < BM)
      cp_async4(&sm.lse[buf][r], lse_bh + (valid ? m0 + r : 0), valid);
    else
      cp_async4(&sm.D[buf][r], D_bh + (valid ? m0 + r : 0), valid);
  };

  load_tile<KT, HS, kNT>(sm.k, k + head0 + n0 * qkv_stride, qkv_stride, T - n0);
  load_tile<KT, HS, kNT>(sm.v, v + head0 + n0 * qkv_stride, qkv_stride, T - n0);
  load_q_tile(i_first, 0);
  cp_async_commit();
  if (clear) {  // this block's share of a later call's dq accumulator, while the first tiles load
    const int64_t n_block = int64_t(gridDim.x) * gridDim.y, block = int64_t(blockIdx.y) * gridDim.x + blockIdx.x;
    const int64_t per = (clear_n4 + n_block - 1) / n_block, end = min(clear_n4, (block + 1) * per);
    for (int64_t i = block * per + threadIdx.x; i < end; i += kNT) clear[i] = make_float4(0.f, 0.f, 0.f, 0.f);
  }

  float dk_acc[HS / 8][4] = {}, dv_acc[HS / 8][4] = {};

  // Query half hq of the tile in buffer buf (first query m0): dv, dk and this warpgroup's rows of
  // dSᵀ panel hq.
  auto half = [&](int buf, int m0, bool diag, int hq) {
    const int mh0 = m0 + 64 * hq;  // this half's first query
    const bf16* sq = sm.q[buf] + 64 * hq * HS;
    const bf16* sdo = sm.dout[buf] + 64 * hq * HS;
    const float* lse_h = sm.lse[buf] + 64 * hq;
    const float* Dq = sm.D[buf] + 64 * hq;

    float st[8][4], dpt[8][4];  // Sᵀ, dPᵀ: rows = this warp's keys, columns = the 64 queries
    wg::fence();
#pragma unroll
    for (int kk = 0; kk < HS / 16; ++kk)
      wg::mma_ss<0>(st, wg::smem_desc(sk_wg + kk * 16, 16, 1024), wg::smem_desc(sq + kk * 16, 16, 1024), kk > 0);
    wg::commit();
#pragma unroll
    for (int kk = 0; kk < HS / 16; ++kk)
      wg::mma_ss<0>(dpt, wg::smem_desc(sv_wg + kk * 16, 16, 1024), wg::smem_desc(sdo + kk * 16, 16, 1024), kk > 0);
    wg::commit();
    wg::wait<1>();  // Sᵀ; dPᵀ may still run
    wg::fence_acc(st);

    // Pᵀ = exp2(Sᵀ·scale·log2e - lse·log2e), zero where key > query (diagonal tile only).
    const bool mask = diag && key_w0 + 15 > mh0;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      const float2 l = *reinterpret_cast<const float2*>(&lse_h[nt * 8 + 2 * c]);
      const float l2[2] = {l.x * kLog2e, l.y * kLog2e};
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float p = ex2(fmaf(st[nt][e], scale_log2, -l2[e & 1]));
        if (mask && key_w0 + g + (e >> 1) * 8 > mh0 + nt * 8 + 2 * c + (e & 1)) p = 0.f;
        st[nt][e] = p;
      }
    }
    wg::wait<0>();
    wg::fence_acc(dpt);
    uint32_t pa[4][4], dsa[4][4];  // Pᵀ and dSᵀ = Pᵀ ∘ (dPᵀ - D) as A fragments, k = queries
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      const float2 d2 = *reinterpret_cast<const float2*>(&Dq[nt * 8 + 2 * c]);
#pragma unroll
      for (int e = 0; e < 4; ++e) dpt[nt][e] = st[nt][e] * (dpt[nt][e] - ((e & 1) ? d2.y : d2.x));
    }
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      acc_to_a(pa[kk], st[2 * kk], st[2 * kk + 1]);
      acc_to_a(dsa[kk], dpt[2 * kk], dpt[2 * kk + 1]);
    }
    wg::fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) wg::mma_rs<1>(dv_acc, pa[kk], wg::smem_desc(sdo + kk * 16 * HS, 8192, 1024), 1);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) wg::mma_rs<1>(dk_acc, dsa[kk], wg::smem_desc(sq + kk * 16 * HS, 8192, 1024), 1);
    wg::commit();
    // dSᵀ to panel hq while they run: dsa[kk] holds rows (g, g+8) × query columns (2c, 2c+8)
    // of this warp's keys and queries 16·kk...
    bf16* ds = sm.ds[hq];
    const int kr = 64 * wg_id + 16 * warp + g;
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      *reinterpret_cast<uint32_t*>(ds + swz<64>(kr, kk * 16) + 2 * c) = dsa[kk][0];
      *reinterpret_cast<uint32_t*>(ds + swz<64>(kr + 8, kk * 16) + 2 * c) = dsa[kk][1];
      *reinterpret_cast<uint32_t*>(ds + swz<64>(kr, kk * 16 + 8) + 2 * c) = dsa[kk][2];
      *reinterpret_cast<uint32_t*>(ds + swz<64>(kr + 8, kk * 16 + 8) + 2 * c) = dsa[kk][3];
    }
    wg::wait<0>();
    wg::fence_acc(dv_acc);
    wg::fence_acc(dk_acc);
  };

  // dq for query half wg_id of the tile at m0 (panel wg_id, complete) over the keys up to its
  // last query, added to the accumulator.
  auto dq_half = [&](int m0) {
    const int mq0 = m0 + 64 * wg_id;
    float dq[8][4];
    wg::fence();
#pragma unroll
    for (int kk = 0; kk < KT / 16; ++kk)
      wg::mma_ss<1, 1>(dq, wg::smem_desc(sm.ds[wg_id] + kk * 16 * 64, 8192, 1024),
                       wg::smem_desc(sm.k + kk * 16 * HS, 8192, 1024), kk > 0);
    wg::commit();
    wg::wait<0>();
    wg::fence_acc(dq);
    float* dq_tile = dq_acc + (int64_t(b) * T * NH + h) * HS;
#pragma unroll
    for (int dt = 0; dt < HS / 8; ++dt)
      atomic_add_c_tile(dq_tile + dt * 8, int64_t(NH) * HS, mq0 + 16 * warp, T, dq[dt]);
  };

  // Staggered: warpgroup 0 takes dq of half 0 as soon as both have finished half 0, while
  // warpgroup 1 goes on with half 1; warpgroup 1 takes dq of half 1 after the second barrier
  // while warpgroup 0 starts the next tile. Tile i+1 loads while tile i runs (issued after the
  // second barrier of tile i-1, when tile i-1's buffer is free).
  if (i_first + 1 < n_qtiles) load_q_tile(i_first + 1, 1);
  cp_async_commit();
  cp_async_wait<1>();  // k, v and the first tile
  wg::fence_proxy_async();
  __syncthreads();
  for (int i = i_first; i < n_qtiles; ++i) {
    const int buf = (i - i_first) & 1, m0 = i * BM;
    half(buf, m0, i == i_first, 0);
    wg::fence_proxy_async();  // the dSᵀ stores of half 0, for warpgroup 0's dq
    __syncthreads();          // (A) panel 0 complete; panel 1 read by the last dq of warpgroup 1
    if (wg_id == 0) dq_half(m0);
    half(buf, m0, i == i_first, 1);
    cp_async_wait<0>();       // tile i+1
    wg::fence_proxy_async();  // it and the dSᵀ stores of half 1
    __syncthreads();          // (B) panel 1 complete; panel 0 read by warpgroup 0's dq; tile i read
    if (i + 2 < n_qtiles) load_q_tile(i + 2, buf);
    cp_async_commit();
    if (wg_id == 1) dq_half(m0);
  }

  // dk = scale·Σ dSᵀ·q and dv for this warp's 16 keys.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int key = key_w0 + g + r * 8;
    if (key >= T) continue;
    bf16* dkr = dk + head0 + int64_t(key) * qkv_stride;
    bf16* dvr = dv + head0 + int64_t(key) * qkv_stride;
#pragma unroll
    for (int dt = 0; dt < HS / 8; ++dt) {
      *reinterpret_cast<uint32_t*>(dkr + dt * 8 + 2 * c) = pack_bf16(dk_acc[dt][2 * r] * scale, dk_acc[dt][2 * r + 1] * scale);
      *reinterpret_cast<uint32_t*>(dvr + dt * 8 + 2 * c) = pack_bf16(dv_acc[dt][2 * r], dv_acc[dt][2 * r + 1]);
    }
  }
  // With dbias_part: the block's column sums of dk and dv (fp32, before rounding) into the
  // fused q/k/v bias's partial row of this sequence's key tile (keys past T have dk = dv = 0:
  // every query masks them). Lanes of one c hold a warp's 16 keys of a column pair; the eight
  // warps' sums meet in shared memory (q's first buffer, free once every warp is past the loop).
  if (dbias_part) {
    float ks[HS / 8][2], vs[HS / 8][2];
#pragma unroll
    for (int dt = 0; dt < HS / 8; ++dt) {
      ks[dt][0] = (dk_acc[dt][0] + dk_acc[dt][2]) * scale, ks[dt][1] = (dk_acc[dt][1] + dk_acc[dt][3]) * scale;
      vs[dt][0] = dv_acc[dt][0] + dv_acc[dt][2], vs[dt][1] = dv_acc[dt][1] + dv_acc[dt][3];
#pragma unroll
      for (int m = 4; m < 32; m <<= 1)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          ks[dt][e] += __shfl_xor_sync(0xffffffffu, ks[dt][e], m);
          vs[dt][e] += __shfl_xor_sync(0xffffffffu, vs[dt][e], m);
        }
    }
    __syncthreads();
    float* red = reinterpret_cast<float*>(sm.q[0]);  // [8 warps][dk 64 | dv 64]
    const int w8 = wg_id * 4 + warp;
    if (g == 0)
#pragma unroll
      for (int dt = 0; dt < HS / 8; ++dt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          red[w8 * 2 * HS + dt * 8 + 2 * c + e] = ks[dt][e];
          red[w8 * 2 * HS + HS + dt * 8 + 2 * c + e] = vs[dt][e];
        }
    __syncthreads();
    if (threadIdx.x < 2 * HS) {
      float t = 0.f;
#pragma unroll
      for (int w = 0; w < 8; ++w) t += red[w * 2 * HS + threadIdx.x];
      const int C = NH * HS, part_row = b * int(gridDim.x) + int(blockIdx.x);  // gridDim.x: T's key tiles
      const int col = (threadIdx.x < HS ? C : 2 * C) + h * HS + int(threadIdx.x) % HS;
      dbias_part[int64_t(part_row) * 3 * C + col] = t;
    }
  }
}

// ---- launches -----------------------------------------------------------------------------------

AttentionDims resolved(const AttentionDims& d) {
  if (d.B < 1 || d.T < 1 || d.NH < 1 || !(d.hs == 32 || d.hs == 64 || d.hs == 128))
    throw std::invalid_argument("attention: need B, T, NH >= 1 and hs in {32, 64, 128}, got hs=" +
                                std::to_string(d.hs));
  AttentionDims r = d;
  if (r.qkv_stride == 0) r.qkv_stride = int64_t(d.NH) * d.hs;
  if (r.out_stride == 0) r.out_stride = int64_t(d.NH) * d.hs;
  if (r.scale == 0.f) r.scale = 1.f / std::sqrt(float(d.hs));
  if (int64_t(d.B) * d.NH > 65535)
    throw std::invalid_argument("attention: B·NH must be at most 65535 (a grid dimension)");
  if (r.qkv_stride % 8 || r.out_stride % 8)
    throw std::invalid_argument("attention: token strides must be multiples of 8 elements");
  return r;
}

template <typename Kernel>
void set_smem(Kernel kernel, size_t bytes) {
  set_smem_once(reinterpret_cast<const void*>(kernel), int(bytes));
}

template <class F>
void launch_fwd(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                const AttentionDims& d, cudaStream_t stream) {
  const size_t smem = sizeof(FwdSmem<F>);
  set_smem(attention_fwd_kernel<F>, smem);
  // Query tiles of one (b, h) side by side, so that its k and v stay in L2 while they run.
  const dim3 grid((d.T + F::kRows - 1) / F::kRows, d.B * d.NH);
  attention_fwd_kernel<F><<<grid, F::kThreads, smem, stream>>>(
      out, lse, q, k, v, d.T, d.NH, d.qkv_stride, d.out_stride, d.scale * kLog2e);
  CUDA_CHECK_LAUNCH();
}

void launch_fwd_wg(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const AttentionDims& d,
                   cudaStream_t stream) {
  const size_t smem = sizeof(WgFwdSmem) + 1024;
  set_smem(attention_fwd_wg_kernel, smem);
  const dim3 grid((d.T + kWgFwdRows - 1) / kWgFwdRows, d.B * d.NH);
  attention_fwd_wg_kernel<<<grid, kWgFwdThreads, smem, stream>>>(out, lse, q, k, v, d.T, d.NH, d.qkv_stride,
                                                                 d.out_stride, d.scale * kLog2e);
  CUDA_CHECK_LAUNCH();
}

template <int HS, int kMinBlocks>
void launch_fwd_pipe(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const AttentionDims& d,
                     cudaStream_t stream) {
  const size_t smem = sizeof(WgFwdPipeSmem<HS>) + 1024;
  // All of L1 as shared memory: kMinBlocks blocks of three k/v stages need it.
  set_smem_once(reinterpret_cast<const void*>(attention_fwd_pipe_kernel<HS, kMinBlocks>), int(smem), true);
  const dim3 grid((d.T + kWgFwdRows - 1) / kWgFwdRows, d.B * d.NH);
  attention_fwd_pipe_kernel<HS, kMinBlocks><<<grid, kWgFwdThreads, smem, stream>>>(
      out, lse, q, k, v, d.T, d.NH, d.qkv_stride, d.out_stride, d.scale * kLog2e);
  CUDA_CHECK_LAUNCH();
}

template <class F>
void launch_bwd(bf16* dk, bf16* dv, float* dq_acc, const float* D, const bf16* dout,
                const float* lse, const bf16* q, const bf16* k, const bf16* v,
                const AttentionDims& d, cudaStream_t stream) {
  const size_t smem = sizeof(BwdSmem<F>);
  set_smem(attention_bwd_kernel<F>, smem);
  const dim3 grid((d.T + F::KT - 1) / F::KT, d.B * d.NH);  // key tiles of one (b, h) side by side
  attention_bwd_kernel<F><<<grid, F::kThreads, smem, stream>>>(
      dk, dv, dq_acc, q, k, v, dout, lse, D, d.T, d.NH, d.qkv_stride, d.out_stride, d.scale,
      d.scale * kLog2e);
  CUDA_CHECK_LAUNCH();
}

void launch_bwd_wg(bf16* dk, bf16* dv, float* dq_acc, const float* D, const bf16* dout, const float* lse,
                   const bf16* q, const bf16* k, const bf16* v, float* dbias_part, float* clear, int64_t clear_n,
                   const AttentionDims& d, cudaStream_t stream) {
  const size_t smem = sizeof(WgBwdSmem) + 1024;
  set_smem(attention_bwd_wg_kernel, smem);
  const dim3 grid((d.T + kWgBwdKeys - 1) / kWgBwdKeys, d.B * d.NH);
  attention_bwd_wg_kernel<<<grid, kWgBwdThreads, smem, stream>>>(
      dk, dv, dq_acc, q, k, v, dout, lse, D, dbias_part, reinterpret_cast<float4*>(clear), clear_n / 4, d.T, d.NH,
      d.qkv_stride, d.out_stride, d.scale, d.scale * kLog2e);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void attention_fwd(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                   const AttentionDims& dims, cudaStream_t stream, AttentionFwdKernel kernel) {
  const AttentionDims d = resolved(dims);
  if (d.hs == 32) launch_fwd<FwdTiling<32, 2, 4, 64>>(out, lse, q, k, v, d, stream);
  if (d.hs == 64 && kernel == AttentionFwdKernel::Best) launch_fwd_wg(out, lse, q, k, v, d, stream);
  if (d.hs == 64 && kernel == AttentionFwdKernel::WgmmaPipe) launch_fwd_pipe<64, 2>(out, lse, q, k, v, d, stream);
  // hs = 128: the pipelined kernel either way, 64-key tiles (three stages of 128 keys would not
  // fit), one block an SM for the registers of o.
  if (d.hs == 128) launch_fwd_pipe<128, 1>(out, lse, q, k, v, d, stream);
}

size_t attention_bwd_workspace_bytes(const AttentionDims& dims) {
  const AttentionDims d = resolved(dims);
  const size_t rows = size_t(d.B) * d.T * d.NH;
  return rows * d.hs * sizeof(float) + ((rows * sizeof(float) + 15) / 16) * 16;
}

void attention_bwd(bf16* dq, bf16* dk, bf16* dv, void* workspace, const bf16* dout,
                   const bf16* out, const float* lse, const bf16* q, const bf16* k, const bf16* v,
                   const AttentionDims& dims, cudaStream_t stream, AttentionBwdKernel kernel, float* dbias_part,
                   const AttentionBwdAcc& acc) {
  const AttentionDims d = resolved(dims);
  if (dbias_part && !attention_bwd_sums_bias(dims, kernel))
    throw std::invalid_argument("attention_bwd: the q/k/v bias sums need hs = 64, the Best kernel, q/k/v rows of 3·NH·hs "
                                "and NH·hs a multiple of 8 up to 2048");
  const int64_t rows = int64_t(d.B) * d.T * d.NH;
  const int64_t n_acc = rows * d.hs;  // floats of a dq accumulator
  for (const float* p : {acc.zeroed, acc.clear_next})
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0)
      throw std::invalid_argument("attention_bwd: the dq accumulators must be 16-byte aligned");
  if (acc.clear_next && (acc.clear_next == acc.zeroed || acc.clear_next == static_cast<float*>(workspace)))
    throw std::invalid_argument("attention_bwd: clear_next must not be the accumulator this call uses");
  float* D = static_cast<float*>(workspace) + n_acc;
  float* dq_acc = acc.zeroed ? acc.zeroed : static_cast<float*>(workspace);

  const int64_t n_threads = rows * d.hs / 8;  // for the pre and the dq kernels
  if (n_threads + 255 > int64_t(UINT32_MAX))
    throw std::invalid_argument("attention_bwd: B·T·NH·hs must be below 2^35 (the backward's 32-bit indices)");
  // The pre-pass clears the workspace's accumulator; a zeroed one of the caller's it leaves.
  attention_bwd_pre_kernel<<<unsigned((n_threads + 255) / 256), 256, 0, stream>>>(
      acc.zeroed ? nullptr : dq_acc, D, dout, out, uint32_t(n_threads), d.T, d.NH, d.hs, d.out_stride);
  CUDA_CHECK_LAUNCH();

  // 128-key tiles (half the dq atomics of 64-key tiles): for hs = 64 the warpgroup-MMA kernel (or
  // four warps of two atoms, sharing the q and dout fragments, 32 queries per step to keep dk,
  // dv, Sᵀ and dPᵀ in registers); for hs = 128 eight warps of one atom, 64 queries per step.
  if (d.hs == 32)
    launch_bwd<BwdTiling<32, 64, 4, 1>>(dk, dv, dq_acc, D, dout, lse, q, k, v, d, stream);
  const bool clears = d.hs == 64 && kernel == AttentionBwdKernel::Best;  // clear_next in its main kernel
  if (clears) launch_bwd_wg(dk, dv, dq_acc, D, dout, lse, q, k, v, dbias_part, acc.clear_next, n_acc, d, stream);
  if (d.hs == 64 && kernel == AttentionBwdKernel::MmaSync)
    launch_bwd<BwdTiling<64, 32, 4, 2>>(dk, dv, dq_acc, D, dout, lse, q, k, v, d, stream);
  if (d.hs == 128)
    launch_bwd<BwdTiling<128, 64, 8, 1>>(dk, dv, dq_acc, D, dout, lse, q, k, v, d, stream);
  if (acc.clear_next && !clears)
    CUDA_CHECK(cudaMemsetAsync(acc.clear_next, 0, size_t(n_acc) * sizeof(float), stream));

  if (dbias_part) {
    const int C = d.NH * d.hs, R = 256 / (C / 8);
    const dim3 grid(unsigned((d.T + kWgBwdKeys - 1) / kWgBwdKeys), unsigned(d.B));
    attention_bwd_dq_sum_kernel<<<grid, 256, size_t(R) * C * sizeof(float), stream>>>(dq, dq_acc, dbias_part, d.T, C,
                                                                                    d.qkv_stride, d.scale);
  } else {
    attention_bwd_dq_kernel<<<unsigned((n_threads + 255) / 256), 256, 0, stream>>>(
        dq, dq_acc, uint32_t(n_threads), d.NH * d.hs, d.qkv_stride, d.scale);
  }
  CUDA_CHECK_LAUNCH();
}

bool attention_bwd_sums_bias(const AttentionDims& dims, AttentionBwdKernel kernel) {
  const AttentionDims d = resolved(dims);
  const int64_t C = int64_t(d.NH) * d.hs;
  return d.hs == 64 && kernel == AttentionBwdKernel::Best && d.qkv_stride == 3 * C && C % 8 == 0 && C <= 2048;
}

int64_t attention_bwd_bias_rows(const AttentionDims& dims) {
  return int64_t(dims.B) * ((dims.T + kWgBwdKeys - 1) / kWgBwdKeys);
}

}  // namespace pg::kernels
