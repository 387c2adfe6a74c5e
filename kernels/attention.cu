// Causal flash attention, forward and backward (FlashAttention-2 scheme) on bf16 mma.sync.
//
// Math, per (batch b, head h), with S = scale·q·kᵀ masked to s <= t:
//   forward   P = softmax_rows(S), out = P·v, lse_t = log Σ_s exp S[t,s]. Query tiles are independent;
//             each walks its key tiles keeping, per row, the running max m, the running sum l and
//             the unnormalised output o (online softmax: on a new tile with max m', o and l are
//             multiplied by exp(m - m')). Exponentials are exp2 of log2e-scaled scores.
//   backward  P = exp(S - lse) is recomputed tile by tile from q, k and lse; with
//             D_t = Σ_i dout[t,i]·out[t,i] (= Σ_s P[t,s]·dP[t,s]):
//               dv = Pᵀ·dout,  dP = dout·vᵀ,  dS = P ∘ (dP - D),  dk = scale·dSᵀ·q,  dq = scale·dS·k.
//             Key tiles are independent (dk, dv stay in registers); dq collects contributions from
//             every key tile with fp32 atomics into a workspace, then one pass scales and rounds it.
//
// Kernels (all blocks 128 threads = 4 warps; tiles of 64 rows; grids put the heaviest causal tiles
// first, since they are dispatched in order):
//   attention_fwd_kernel<HS>   grid (B·NH, ceil(T/64)); block i takes query tile nq-1-blockIdx.y,
//                              warp w its rows 16w..16w+15. Shared: q tile, two k and two v tiles
//                              (cp.async double buffer). Writes out, lse.
//   attention_bwd_pre_kernel   grid ceil(B·T·NH / 4), one warp per (token, head): D, and zeroes the
//                              dq accumulator row.
//   attention_bwd_kernel<HS,BM> grid (B·NH, ceil(T/64)); block j takes key tile blockIdx.y, warp w
//                              its keys 16w..16w+15, and walks query tiles of BM rows (64 for
//                              hs <= 64, 32 for hs = 128 to keep dk, dv and the tiles in registers).
//                              Shared: k, v tiles, two q and two dout tiles, dSᵀ [64][BM], lse, D.
//   attention_bwd_dq_kernel    dq = bf16(scale·accumulator), one thread per 8 elements.
// Pointer layouts are in attention.cuh. Workspace: dq accumulator fp32 [B,T,NH,hs] (contiguous),
// then D fp32 [B,NH,T].
#include <cuda_bf16.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "attention.cuh"
#include "attention_tiles.cuh"

namespace pg::kernels {
namespace {

using bf16 = __nv_bfloat16;
using namespace tiles;

constexpr int kThreads = 128;
constexpr int kTile = 64;  // query rows per forward block; keys per backward block
constexpr float kLog2e = 1.4426950408889634f;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw std::runtime_error(std::string(what) + " (" __FILE__ "): " + cudaGetErrorString(e));
}

// ---- forward ------------------------------------------------------------------------------------

template <int HS>
struct FwdSmem {
  bf16 q[kTile * HS];
  bf16 k[2][kTile * HS];
  bf16 v[2][kTile * HS];
};

template <int HS>
__global__ void __launch_bounds__(kThreads) attention_fwd_kernel(
    bf16* __restrict__ out, float* __restrict__ lse, const bf16* __restrict__ q,
    const bf16* __restrict__ k, const bf16* __restrict__ v, int T, int NH, int64_t qkv_stride,
    int64_t out_stride, float scale_log2) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  auto& sm = *reinterpret_cast<FwdSmem<HS>*>(smem_raw);
  const int bh = blockIdx.x, b = bh / NH, h = bh % NH;
  const int qtile = int(gridDim.y) - 1 - int(blockIdx.y);
  const int m0 = qtile * kTile;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
  const int64_t head0 = int64_t(b) * T * qkv_stride + int64_t(h) * HS;  // token 0 of (b, h)
  const int n_ktiles = qtile + 1;  // causal: key tiles 0..qtile

  load_tile<kTile, HS, kThreads>(sm.q, q + head0 + m0 * qkv_stride, qkv_stride, T - m0);
  load_tile<kTile, HS, kThreads>(sm.k[0], k + head0, qkv_stride, T);
  load_tile<kTile, HS, kThreads>(sm.v[0], v + head0, qkv_stride, T);
  cp_async_commit();

  float o[HS / 8][4] = {};
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};  // rows g, g+8
  uint32_t qf[HS / 16][4];
  const int row_q0 = m0 + warp * 16 + g;  // this thread's first query row; the second is +8

  for (int j = 0; j < n_ktiles; ++j) {
    cp_async_wait<0>();
    __syncthreads();  // tile j landed for all; everyone is done reading buffer (j+1)&1
    if (j + 1 < n_ktiles) {
      const int n1 = (j + 1) * kTile;
      load_tile<kTile, HS, kThreads>(sm.k[(j + 1) & 1], k + head0 + n1 * qkv_stride, qkv_stride,
                                     T - n1);
      load_tile<kTile, HS, kThreads>(sm.v[(j + 1) & 1], v + head0 + n1 * qkv_stride, qkv_stride,
                                     T - n1);
    }
    cp_async_commit();
    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < HS / 16; ++kk) load_a<HS>(qf[kk], sm.q, warp * 16, kk * 16);
    }
    const bf16* sk = sm.k[j & 1];
    const bf16* sv = sm.v[j & 1];

    // S = q·kᵀ for this warp's 16 rows × 64 keys.
    float s[kTile / 8][4] = {};
#pragma unroll
    for (int kk = 0; kk < HS / 16; ++kk) {
#pragma unroll
      for (int np = 0; np < kTile / 16; ++np) {
        uint32_t bfr[4];
        load_b_nk<HS>(bfr, sk, np * 16, kk * 16);
        mma(s[2 * np], qf[kk], bfr[0], bfr[1]);
        mma(s[2 * np + 1], qf[kk], bfr[2], bfr[3]);
      }
    }

    // Scale to the log2 domain, mask s > t (only the diagonal tile has such keys; keys >= T lie
    // beyond every valid row), and update the running max.
    const int n0 = j * kTile;
    const bool diag = n0 + kTile - 1 > m0 + warp * 16;
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < kTile / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[nt][e] * scale_log2;
        if (diag) {
          const int key = n0 + nt * 8 + 2 * c + (e & 1);
          const int row = row_q0 + (e >> 1) * 8;
          if (key > row) x = -INFINITY;
        }
        s[nt][e] = x;
        tile_max[e >> 1] = fmaxf(tile_max[e >> 1], x);
      }
    }
    float alpha[2], sub[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
      const float m_new = fmaxf(row_max[r], tile_max[r]);
      sub[r] = m_new == -INFINITY ? 0.f : m_new;  // a row with no key yet keeps o = l = 0
      alpha[r] = exp2f(row_max[r] - sub[r]);
      row_max[r] = m_new;
      row_sum[r] *= alpha[r];
    }
#pragma unroll
    for (int dt = 0; dt < HS / 8; ++dt) {
      o[dt][0] *= alpha[0];
      o[dt][1] *= alpha[0];
      o[dt][2] *= alpha[1];
      o[dt][3] *= alpha[1];
    }
#pragma unroll
    for (int nt = 0; nt < kTile / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = exp2f(s[nt][e] - sub[e >> 1]);
        s[nt][e] = p;
        row_sum[e >> 1] += p;  // this thread's columns only; the quad is summed at the end
      }
    }

    // o += P·v, P taken from the accumulators as A fragments.
#pragma unroll
    for (int kk = 0; kk < kTile / 16; ++kk) {
      uint32_t pa[4];
      acc_to_a(pa, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
      for (int dp = 0; dp < HS / 16; ++dp) {
        uint32_t bfr[4];
        load_b_kn<HS>(bfr, sv, kk * 16, dp * 16);
        mma(o[2 * dp], pa, bfr[0], bfr[1]);
        mma(o[2 * dp + 1], pa, bfr[2], bfr[3]);
      }
    }
  }

  // Normalise and write out (bf16) and lse (fp32, natural log).
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 1);
    row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 2);
    const int row = row_q0 + r * 8;
    if (row >= T) continue;
    const float inv = 1.f / row_sum[r];
    bf16* orow = out + (int64_t(b) * T + row) * out_stride + int64_t(h) * HS;
#pragma unroll
    for (int dt = 0; dt < HS / 8; ++dt) {
      *reinterpret_cast<uint32_t*>(orow + dt * 8 + 2 * c) =
          pack_bf16(o[dt][2 * r] * inv, o[dt][2 * r + 1] * inv);
    }
    if (c == 0) lse[int64_t(bh) * T + row] = row_max[r] / kLog2e + logf(row_sum[r]);
  }
}

// ---- backward -----------------------------------------------------------------------------------

// D[b,h,t] = Σ_i dout·out over the head's hs channels; zeroes the dq accumulator row. One warp per
// (token, head) row, lanes striding over the channels.
__global__ void attention_bwd_pre_kernel(float* __restrict__ dq_acc, float* __restrict__ D,
                                         const bf16* __restrict__ dout, const bf16* __restrict__ out,
                                         int B, int T, int NH, int hs, int64_t out_stride) {
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= int64_t(B) * T * NH) return;
  const int h = int(row % NH);
  const int64_t bt = row / NH;  // b·T + t
  const bf16* dr = dout + bt * out_stride + int64_t(h) * hs;
  const bf16* orow = out + bt * out_stride + int64_t(h) * hs;
  float acc = 0.f;
  for (int i = 2 * lane; i < hs; i += 64) {
    const float2 d2 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(dr + i));
    const float2 o2 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(orow + i));
    acc += d2.x * o2.x + d2.y * o2.y;
    *reinterpret_cast<float2*>(dq_acc + row * hs + i) = make_float2(0.f, 0.f);
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  const int64_t b = bt / T, t = bt % T;
  if (lane == 0) D[(b * NH + h) * T + t] = acc;
}

__global__ void attention_bwd_dq_kernel(bf16* __restrict__ dq, const float* __restrict__ dq_acc,
                                        int64_t n_rows, int hs, int64_t qkv_stride, int NH,
                                        float scale) {
  const int64_t i = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * 8;  // element of dq_acc
  if (i >= n_rows * hs) return;
  const int64_t row = i / hs;  // (b·T + t)·NH + h
  const int col = int(i % hs);
  const float4 x0 = *reinterpret_cast<const float4*>(dq_acc + i);
  const float4 x1 = *reinterpret_cast<const float4*>(dq_acc + i + 4);
  uint4 packed;
  packed.x = pack_bf16(x0.x * scale, x0.y * scale);
  packed.y = pack_bf16(x0.z * scale, x0.w * scale);
  packed.z = pack_bf16(x1.x * scale, x1.y * scale);
  packed.w = pack_bf16(x1.z * scale, x1.w * scale);
  bf16* dst = dq + (row / NH) * qkv_stride + (row % NH) * hs + col;
  *reinterpret_cast<uint4*>(dst) = packed;
}

template <int HS, int BM>
struct BwdSmem {
  bf16 k[kTile * HS];
  bf16 v[kTile * HS];
  bf16 q[2][BM * HS];
  bf16 dout[2][BM * HS];
  bf16 ds[kTile * BM];  // dSᵀ: [key][query]
  float lse2[2][BM];    // lse·log2e, +inf for rows >= T (so P = 0 there)
  float D[2][BM];
};

template <int HS, int BM>
__global__ void __launch_bounds__(kThreads) attention_bwd_kernel(
    bf16* __restrict__ dk, bf16* __restrict__ dv, float* __restrict__ dq_acc,
    const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
    const bf16* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ D,
    int T, int NH, int64_t qkv_stride, int64_t out_stride, float scale, float scale_log2) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  auto& sm = *reinterpret_cast<BwdSmem<HS, BM>*>(smem_raw);
  const int bh = blockIdx.x, b = bh / NH, h = bh % NH;
  const int n0 = int(blockIdx.y) * kTile;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
  const int64_t head0 = int64_t(b) * T * qkv_stride + int64_t(h) * HS;
  const int64_t dhead0 = int64_t(b) * T * out_stride + int64_t(h) * HS;
  const float* lse_bh = lse + int64_t(bh) * T;
  const float* D_bh = D + int64_t(bh) * T;
  const int i_first = n0 / BM, n_qtiles = (T + BM - 1) / BM;
  const int key_w0 = n0 + warp * 16;  // this warp's first key

  auto load_q_tile = [&](int i, int buf) {
    const int m0 = i * BM;
    load_tile<BM, HS, kThreads>(sm.q[buf], q + head0 + m0 * qkv_stride, qkv_stride, T - m0);
    load_tile<BM, HS, kThreads>(sm.dout[buf], dout + dhead0 + m0 * out_stride, out_stride, T - m0);
    for (int r = threadIdx.x; r < BM; r += kThreads) {
      const bool valid = m0 + r < T;
      sm.lse2[buf][r] = valid ? lse_bh[m0 + r] * kLog2e : INFINITY;
      sm.D[buf][r] = valid ? D_bh[m0 + r] : 0.f;
    }
  };

  load_tile<kTile, HS, kThreads>(sm.k, k + head0 + n0 * qkv_stride, qkv_stride, T - n0);
  load_tile<kTile, HS, kThreads>(sm.v, v + head0 + n0 * qkv_stride, qkv_stride, T - n0);
  load_q_tile(i_first, 0);
  cp_async_commit();

  float dk_acc[HS / 8][4] = {}, dv_acc[HS / 8][4] = {};
  constexpr int kWarpsM = BM / 16, kWarpsN = 4 / kWarpsM;  // dq tile split over the 4 warps
  constexpr int kDqCols = HS / kWarpsN;

  for (int i = i_first; i < n_qtiles; ++i) {
    const int buf = (i - i_first) & 1;
    cp_async_wait<0>();
    __syncthreads();
    if (i + 1 < n_qtiles) load_q_tile(i + 1, buf ^ 1);
    cp_async_commit();
    const bf16* sq = sm.q[buf];
    const bf16* sdo = sm.dout[buf];
    const int m0 = i * BM;

    // Sᵀ = k·qᵀ (16 keys × BM queries per warp) and dPᵀ = v·doutᵀ.
    float st[BM / 8][4] = {}, dpt[BM / 8][4] = {};
#pragma unroll
    for (int kk = 0; kk < HS / 16; ++kk) {
      uint32_t ka[4], va[4];
      load_a<HS>(ka, sm.k, warp * 16, kk * 16);
      load_a<HS>(va, sm.v, warp * 16, kk * 16);
#pragma unroll
      for (int np = 0; np < BM / 16; ++np) {
        uint32_t bq[4], bd[4];
        load_b_nk<HS>(bq, sq, np * 16, kk * 16);
        load_b_nk<HS>(bd, sdo, np * 16, kk * 16);
        mma(st[2 * np], ka, bq[0], bq[1]);
        mma(st[2 * np + 1], ka, bq[2], bq[3]);
        mma(dpt[2 * np], va, bd[0], bd[1]);
        mma(dpt[2 * np + 1], va, bd[2], bd[3]);
      }
    }

    // Pᵀ = exp2(Sᵀ·scale·log2e - lse·log2e), zero where key > query; dSᵀ = Pᵀ ∘ (dPᵀ - D).
    const bool diag = key_w0 + 15 > m0;
#pragma unroll
    for (int nt = 0; nt < BM / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int qcol = nt * 8 + 2 * c + (e & 1);
        float p = exp2f(st[nt][e] * scale_log2 - sm.lse2[buf][qcol]);
        if (diag && key_w0 + g + (e >> 1) * 8 > m0 + qcol) p = 0.f;
        st[nt][e] = p;
        dpt[nt][e] = p * (dpt[nt][e] - sm.D[buf][qcol]);
      }
    }

    // dv += Pᵀ·dout and dk += dSᵀ·q (k = the BM queries); dSᵀ also goes to shared memory for dq.
#pragma unroll
    for (int kk = 0; kk < BM / 16; ++kk) {
      uint32_t pa[4], dsa[4];
      acc_to_a(pa, st[2 * kk], st[2 * kk + 1]);
      acc_to_a(dsa, dpt[2 * kk], dpt[2 * kk + 1]);
#pragma unroll
      for (int dp = 0; dp < HS / 16; ++dp) {
        uint32_t bd[4], bq[4];
        load_b_kn<HS>(bd, sdo, kk * 16, dp * 16);
        load_b_kn<HS>(bq, sq, kk * 16, dp * 16);
        mma(dv_acc[2 * dp], pa, bd[0], bd[1]);
        mma(dv_acc[2 * dp + 1], pa, bd[2], bd[3]);
        mma(dk_acc[2 * dp], dsa, bq[0], bq[1]);
        mma(dk_acc[2 * dp + 1], dsa, bq[2], bq[3]);
      }
      // dsa's registers a0..a3 are rows (g, g+8) × query columns (2c, 2c+8) of this 16-query
      // block; store them as dSᵀ[key][query].
      const int kr = warp * 16 + g, qc = kk * 16 + 2 * c;
      *reinterpret_cast<uint32_t*>(sm.ds + swz<BM>(kr, qc & ~7) + (qc & 7)) = dsa[0];
      *reinterpret_cast<uint32_t*>(sm.ds + swz<BM>(kr + 8, qc & ~7) + (qc & 7)) = dsa[1];
      *reinterpret_cast<uint32_t*>(sm.ds + swz<BM>(kr, (qc + 8) & ~7) + (qc & 7)) = dsa[2];
      *reinterpret_cast<uint32_t*>(sm.ds + swz<BM>(kr + 8, (qc + 8) & ~7) + (qc & 7)) = dsa[3];
    }
    __syncthreads();

    // dq[m0.., :] += dS·k: warp (wm, wn) takes query rows 16·wm.. and head columns kDqCols·wn..
    const int wm = warp % kWarpsM, wn = warp / kWarpsM;
    float dq_part[kDqCols / 8][4] = {};
#pragma unroll
    for (int kk = 0; kk < kTile / 16; ++kk) {
      uint32_t a[4];
      load_a_t<BM>(a, sm.ds, kk * 16, wm * 16);
#pragma unroll
      for (int dp = 0; dp < kDqCols / 16; ++dp) {
        uint32_t bk[4];
        load_b_kn<HS>(bk, sm.k, kk * 16, wn * kDqCols + dp * 16);
        mma(dq_part[2 * dp], a, bk[0], bk[1]);
        mma(dq_part[2 * dp + 1], a, bk[2], bk[3]);
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = m0 + wm * 16 + g + r * 8;
      if (row >= T) continue;
      float* dst = dq_acc + ((int64_t(b) * T + row) * NH + h) * HS + wn * kDqCols + 2 * c;
#pragma unroll
      for (int dt = 0; dt < kDqCols / 8; ++dt)
        atomicAdd(reinterpret_cast<float2*>(dst + dt * 8),
                  make_float2(dq_part[dt][2 * r], dq_part[dt][2 * r + 1]));
    }
  }

  // dk = scale·Σ dSᵀ·q and dv, for this warp's 16 keys.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int key = key_w0 + g + r * 8;
    if (key >= T) continue;
    bf16* dkr = dk + head0 + int64_t(key) * qkv_stride;
    bf16* dvr = dv + head0 + int64_t(key) * qkv_stride;
#pragma unroll
    for (int dt = 0; dt < HS / 8; ++dt) {
      *reinterpret_cast<uint32_t*>(dkr + dt * 8 + 2 * c) =
          pack_bf16(dk_acc[dt][2 * r] * scale, dk_acc[dt][2 * r + 1] * scale);
      *reinterpret_cast<uint32_t*>(dvr + dt * 8 + 2 * c) =
          pack_bf16(dv_acc[dt][2 * r], dv_acc[dt][2 * r + 1]);
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
  if (r.qkv_stride % 8 || r.out_stride % 8)
    throw std::invalid_argument("attention: token strides must be multiples of 8 elements");
  return r;
}

template <typename Kernel>
void set_smem(Kernel kernel, size_t bytes) {
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)),
        "cudaFuncSetAttribute(attention smem)");
}

template <int HS>
void launch_fwd(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                const AttentionDims& d, cudaStream_t stream) {
  const size_t smem = sizeof(FwdSmem<HS>);
  set_smem(attention_fwd_kernel<HS>, smem);
  const dim3 grid(d.B * d.NH, (d.T + kTile - 1) / kTile);
  attention_fwd_kernel<HS><<<grid, kThreads, smem, stream>>>(
      out, lse, q, k, v, d.T, d.NH, d.qkv_stride, d.out_stride, d.scale * kLog2e);
  check(cudaGetLastError(), "attention_fwd_kernel launch");
}

template <int HS, int BM>
void launch_bwd(bf16* dk, bf16* dv, float* dq_acc, const float* D, const bf16* dout,
                const float* lse, const bf16* q, const bf16* k, const bf16* v,
                const AttentionDims& d, cudaStream_t stream) {
  const size_t smem = sizeof(BwdSmem<HS, BM>);
  set_smem(attention_bwd_kernel<HS, BM>, smem);
  const dim3 grid(d.B * d.NH, (d.T + kTile - 1) / kTile);
  attention_bwd_kernel<HS, BM><<<grid, kThreads, smem, stream>>>(
      dk, dv, dq_acc, q, k, v, dout, lse, D, d.T, d.NH, d.qkv_stride, d.out_stride, d.scale,
      d.scale * kLog2e);
  check(cudaGetLastError(), "attention_bwd_kernel launch");
}

}  // namespace

void attention_fwd(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                   const AttentionDims& dims, cudaStream_t stream) {
  const AttentionDims d = resolved(dims);
  if (d.hs == 32) launch_fwd<32>(out, lse, q, k, v, d, stream);
  if (d.hs == 64) launch_fwd<64>(out, lse, q, k, v, d, stream);
  if (d.hs == 128) launch_fwd<128>(out, lse, q, k, v, d, stream);
}

size_t attention_bwd_workspace_bytes(const AttentionDims& dims) {
  const AttentionDims d = resolved(dims);
  const size_t rows = size_t(d.B) * d.T * d.NH;
  return rows * d.hs * sizeof(float) + ((rows * sizeof(float) + 15) / 16) * 16;
}

void attention_bwd(bf16* dq, bf16* dk, bf16* dv, void* workspace, const bf16* dout,
                   const bf16* out, const float* lse, const bf16* q, const bf16* k, const bf16* v,
                   const AttentionDims& dims, cudaStream_t stream) {
  const AttentionDims d = resolved(dims);
  const int64_t rows = int64_t(d.B) * d.T * d.NH;
  float* dq_acc = static_cast<float*>(workspace);
  float* D = dq_acc + rows * d.hs;

  constexpr int kPreWarps = 4;
  attention_bwd_pre_kernel<<<unsigned((rows + kPreWarps - 1) / kPreWarps), 32 * kPreWarps, 0,
                             stream>>>(dq_acc, D, dout, out, d.B, d.T, d.NH, d.hs, d.out_stride);
  check(cudaGetLastError(), "attention_bwd_pre_kernel launch");

  if (d.hs == 32) launch_bwd<32, 64>(dk, dv, dq_acc, D, dout, lse, q, k, v, d, stream);
  if (d.hs == 64) launch_bwd<64, 64>(dk, dv, dq_acc, D, dout, lse, q, k, v, d, stream);
  if (d.hs == 128) launch_bwd<128, 32>(dk, dv, dq_acc, D, dout, lse, q, k, v, d, stream);

  const int64_t n_threads = rows * d.hs / 8;
  attention_bwd_dq_kernel<<<unsigned((n_threads + 255) / 256), 256, 0, stream>>>(
      dq, dq_acc, rows, d.hs, d.qkv_stride, d.NH, d.scale);
  check(cudaGetLastError(), "attention_bwd_dq_kernel launch");
}

}  // namespace pg::kernels
