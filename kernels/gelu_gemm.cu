// The MLP's GEMMs with a GELU epilogue (layout and design: gelu_gemm.cuh).
#include <algorithm>
#include <stdexcept>
#include <string>

#include "backend/cuda/check.hpp"
#include "kernels/attention_tiles.cuh"
#include "kernels/bias.cuh"
#include "kernels/common.cuh"
#include "kernels/gelu_gemm.cuh"
#include "kernels/tma.cuh"
#include "kernels/wgmma.cuh"

namespace pg::kernels {
namespace {

using tiles::pack_bf16;  // two floats to a bf16x2 word

constexpr int kTileM = 128, kTileN = 128, kTileK = 64, kStages = 3;
constexpr int kConsumerThreads = 256, kThreads = kConsumerThreads + 32;  // two warpgroups, a producer warp
constexpr uint32_t kStageBytes = (kTileM + kTileN) * kTileK * sizeof(bf16);

// Stage s holds k-block kb = s, s + 3, ...: A as [128 rows][64 k] and B as [128 n][64 k] (K-major,
// gemm_bias_gelu_aux) or as two panels [64 k][64 n] of columns n0.., n0+64.. (MN-major,
// gemm_dgelu), all in the 128-byte swizzle TMA writes and wgmma reads.
struct GeluGemmSmem {
  alignas(1024) bf16 a[kStages][kTileM * kTileK];
  alignas(1024) bf16 b[kStages][kTileN * kTileK];
  float colsum[8][kTileN];  // gemm_dgelu's column sums, one row per consumer warp
  uint64_t full[kStages];   // the stage's copies have landed (the producer's arrival + bytes)
  uint64_t empty[kStages];  // the stage's products are done (one arrival per consumer warp)
};

__device__ __forceinline__ float2 unpack2(uint32_t v) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&v));
}

// Issues k-block kb of the tile at (m0, n0) into stage buffers a, b, completing on bar: A's
// [128][64] box, and B's [128 n][64 k] box (K-major) or two [64 k][64 n] panels (MN-major, kDGelu).
template <bool kDGelu>
__device__ __forceinline__ void load_kblock(bf16* a, bf16* b, const CUtensorMap* map_a, const CUtensorMap* map_b,
                                            int kb, int m0, int n0, uint64_t* bar) {
  tma::mbar_arrive_expect_tx(bar, kStageBytes);
  tma::load_3d(a, map_a, kb * kTileK, m0, 0, bar);
  if constexpr (kDGelu) {
    tma::load_3d(b, map_b, n0, kb * kTileK, 0, bar);
    tma::load_3d(b + 64 * kTileK, map_b, n0 + 64, kb * kTileK, 0, bar);
  } else {
    tma::load_3d(b, map_b, kb * kTileK, n0, 0, bar);
  }
}

// kDGelu = false: out = gelu(A·Bᵀ + bias), aux = A·Bᵀ + bias. kDGelu = true: out = (alpha·A·B) ∘
// gelu'(aux), and with part, part[m_tile][n] = Σ of the tile's rows of out (fp32, unrounded).
// Accumulators d[16][4] of warpgroup w, warp wl: rows m0 + 64w + 16wl + g (+8), columns
// n0 + 8j + 2c (+1), g = lane / 4, c = lane % 4 (wgmma.cuh). kStaged: the outputs go through
// shared memory (the stages, free once every product is done: per warpgroup [64][64] panels in
// the 128-byte swizzle) and TMA stores (map_out, map_aux: boxes of 64 × 64); otherwise each thread
// stores its pairs of columns.
template <bool kDGelu, bool kStaged>
__global__ void __launch_bounds__(kThreads, 2)
    gelu_gemm_kernel(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
                     const __grid_constant__ CUtensorMap map_out, const __grid_constant__ CUtensorMap map_aux,
                     bf16* __restrict__ out, bf16* __restrict__ aux, const bf16* __restrict__ bias,
                     float* __restrict__ part, float alpha, int M, int N, int K) {
  extern __shared__ unsigned char smem_raw[];
  auto& sm = wg::aligned_smem<GeluGemmSmem>(smem_raw);
  const int n_tiles = N / kTileN;
  const int m_tile = int(blockIdx.x) / n_tiles, n_tile = int(blockIdx.x) % n_tiles;
  const int m0 = m_tile * kTileM, n0 = n_tile * kTileN, n_kb = K / kTileK;
  // Through a shuffle, so that the compiler sees the branches on it as warp-uniform (wgmma.cuh).
  const int warp = __shfl_sync(0xffffffffu, int(threadIdx.x) >> 5, 0), lane = int(threadIdx.x) & 31;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      tma::mbar_init(&sm.full[s], 1);
      tma::mbar_init(&sm.empty[s], kConsumerThreads / 32);
    }
    tma::fence_mbar_init();
  }
  __syncthreads();

  if (warp == kConsumerThreads / 32) {  // the producer: one thread issues every copy
    if (lane == 0) {
      for (int kb = 0; kb < n_kb; ++kb) {
        const int s = kb % kStages;
        if (kb >= kStages) tma::mbar_wait(&sm.empty[s], ((kb / kStages) & 1) ^ 1);  // k-block kb-3 done
        load_kblock<kDGelu>(sm.a[s], sm.b[s], &map_a, &map_b, kb, m0, n0, &sm.full[s]);
      }
    }
    return;
  }

  const int wg_id = warp >> 2, wl = warp & 3, g = lane >> 2, c = lane & 3;
  float d[16][4];
#pragma unroll
  for (int j = 0; j < 16; ++j) d[j][0] = d[j][1] = d[j][2] = d[j][3] = 0.f;
  for (int kb = 0; kb < n_kb; ++kb) {
    const int s = kb % kStages;
    tma::mbar_wait(&sm.full[s], (kb / kStages) & 1);
    wg::fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      const uint64_t da = wg::smem_desc(sm.a[s] + wg_id * 64 * kTileK + kk * 16, 16, 1024);
      if constexpr (kDGelu)
        wg::mma_ss_n128<1>(d, da, wg::smem_desc(sm.b[s] + kk * 16 * 64, 64 * kTileK * sizeof(bf16), 1024), 1);
      else
        wg::mma_ss_n128<0>(d, da, wg::smem_desc(sm.b[s] + kk * 16, 16, 1024), 1);
    }
    wg::commit();
    wg::wait<1>();  // k-block kb-1's products are done: its stage goes back to the producer
    if (kb > 0 && lane == 0) tma::mbar_arrive(&sm.empty[(kb - 1) % kStages]);
  }
  wg::wait<0>();
  wg::fence_acc(d);

  const int rl0 = wl * 16 + g;  // the thread's first row within its warpgroup's 64
  const int row0 = m0 + wg_id * 64 + rl0;
  bf16* const stage = &sm.a[0][0] + wg_id * 4 * 64 * 64;  // kStaged: this warpgroup's four panels
  if constexpr (kStaged)  // every product of the block done: the stages are free
    asm volatile("bar.sync 1, %0;\n" ::"n"(kConsumerThreads) : "memory");
  // Output t (0: out, 1: aux) at rows rl0 + 8r, columns 8j + 2c and the next.
  auto put = [&](bf16* gmem, int t, int j, int r, float lo, float hi) {
    if constexpr (kStaged) {
      *reinterpret_cast<uint32_t*>(stage + (2 * t + j / 8) * 64 * 64 + tiles::swz<64>(rl0 + 8 * r, (j % 8) * 8) +
                                   2 * c) = pack_bf16(lo, hi);
    } else {
      const int row = row0 + 8 * r;
      if (row < M) *reinterpret_cast<uint32_t*>(gmem + int64_t(row) * N + n0 + j * 8 + 2 * c) = pack_bf16(lo, hi);
    }
  };
  if constexpr (!kDGelu) {
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      float2 bv = make_float2(0.f, 0.f);
      if (bias) bv = unpack2(*reinterpret_cast<const uint32_t*>(bias + n0 + j * 8 + 2 * c));
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const float h0 = d[j][2 * r] + bv.x, h1 = d[j][2 * r + 1] + bv.y;
        put(aux, 1, j, r, h0, h1);
        put(out, 0, j, r, gelu_fast_f(h0), gelu_fast_f(h1));
      }
    }
  } else {
    // A quarter of the columns at a time: their aux loads all in flight before the math (two
    // blocks of nine warps an SM leave 96 registers a thread). Rows past M read aux = 0 and
    // have d = 0 (TMA zero-filled A there): they add 0 to the column sums.
#pragma unroll
    for (int quarter = 0; quarter < 4; ++quarter) {
      uint32_t av[4][2];
#pragma unroll
      for (int jj = 0; jj < 4; ++jj)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int row = row0 + 8 * r, col = n0 + (quarter * 4 + jj) * 8 + 2 * c;
          av[jj][r] = row < M ? *reinterpret_cast<const uint32_t*>(aux + int64_t(row) * N + col) : 0u;
        }
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {
        const int j = quarter * 4 + jj;
        float s0 = 0.f, s1 = 0.f;
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const float2 h = unpack2(av[jj][r]);
          const float x0 = alpha * d[j][2 * r] * gelu_grad_fast_f(h.x);
          const float x1 = alpha * d[j][2 * r + 1] * gelu_grad_fast_f(h.y);
          put(out, 0, j, r, x0, x1);
          s0 += x0, s1 += x1;
        }
        if (part) {  // the warp's 16 rows of columns 8j + 2c, +1: the lanes of one c hold them
#pragma unroll
          for (int m = 4; m < 32; m <<= 1) {
            s0 += __shfl_xor_sync(0xffffffffu, s0, m);
            s1 += __shfl_xor_sync(0xffffffffu, s1, m);
          }
          if (g == 0) {
            sm.colsum[warp][j * 8 + 2 * c] = s0;
            sm.colsum[warp][j * 8 + 2 * c + 1] = s1;
          }
        }
      }
    }
  }
  if constexpr (kStaged) {
    wg::fence_proxy_async();  // this warpgroup's panels, to the TMA unit
    if (wg_id == 0) asm volatile("bar.sync 2, 128;\n" ::: "memory");  // ids as constants: two barriers, not 16
    else asm volatile("bar.sync 3, 128;\n" ::: "memory");
    if (threadIdx.x % 128 == 0) {
#pragma unroll
      for (int p = 0; p < 2; ++p) {
        tma::store_3d(&map_out, n0 + 64 * p, m0 + 64 * wg_id, 0, stage + p * 64 * 64);
        if constexpr (!kDGelu) tma::store_3d(&map_aux, n0 + 64 * p, m0 + 64 * wg_id, 0, stage + (2 + p) * 64 * 64);
      }
      tma::store_commit();
      tma::store_wait_read();
    }
  }
  if (kDGelu && part) {
    asm volatile("bar.sync 1, %0;\n" ::"n"(kConsumerThreads) : "memory");  // the consumers only
    if (threadIdx.x < kTileN) {
      float s = 0.f;
#pragma unroll
      for (int w = 0; w < kConsumerThreads / 32; ++w) s += sm.colsum[w][threadIdx.x];
      part[int64_t(m_tile) * N + n0 + threadIdx.x] = s;
    }
  }
}

// ---- the persistent pingpong kernel ---------------------------------------------------------------

// One block an SM, three warpgroups: warpgroup 0 produces (one thread issues the TMA copies of
// every k-block of the block's tiles, in order, into a ring of four stages; setmaxnreg gives its
// registers to the others), warpgroups 1 and 2 consume the block's tiles alternately, each a whole
// 128×128 tile (two m64n128k16 products a k step, 128 accumulators a thread), so that one's
// epilogue runs while the other's products use the tensor cores. The ring hands the k-blocks out
// in tile order, and an order barrier keeps the two warpgroups' main loops one after the other:
// a consumer starts tile i's only once the other has finished tile i-1's. That also keeps the
// stage barriers' phases unambiguous: when a consumer waits for k-block q of a stage, every
// earlier use of the stage has completed, so the parity names q's phase.
constexpr int kPpStages = 4, kPpThreads = 384;
struct GeluGemmPpSmem {
  alignas(1024) bf16 a[kPpStages][kTileM * kTileK];
  alignas(1024) bf16 b[kPpStages][kTileN * kTileK];
  alignas(1024) bf16 out[2][2][kTileM * 64];  // per consumer: two [128][64] panels of an output
  float colsum[2][4][kTileN];                 // per consumer, per warp: gemm_dgelu's column sums
  uint64_t full[kPpStages], empty[kPpStages];
  uint64_t order[2];  // order[w]: consumer w's main loop of a tile is done (one arrival a warp)
  // gemm_dgelu: the producer loads each tile's aux into its consumer's staging panels (aux_full),
  // once the consumer's last store from them has read them (aux_empty).
  uint64_t aux_full[2], aux_empty[2];
};

__device__ __forceinline__ void consumer_sync(int w) {  // one consumer warpgroup; ids as constants
  if (w == 0) asm volatile("bar.sync 1, 128;\n" ::: "memory");
  else asm volatile("bar.sync 2, 128;\n" ::: "memory");
}

template <bool kDGelu>
__global__ void __launch_bounds__(kPpThreads, 1)
    gelu_gemm_pp_kernel(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
                        const __grid_constant__ CUtensorMap map_out, const __grid_constant__ CUtensorMap map_aux,
                        const bf16* __restrict__ bias, float* __restrict__ part,
                        float alpha, int M, int N, int K) {
  extern __shared__ unsigned char smem_raw[];
  auto& sm = wg::aligned_smem<GeluGemmPpSmem>(smem_raw);
  const int n_tiles = N / kTileN, total = ((M + kTileM - 1) / kTileM) * n_tiles, n_kb = K / kTileK;
  const int wg_id = wg::warpgroup_index(), lane = int(threadIdx.x) & 31;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kPpStages; ++s) {
      tma::mbar_init(&sm.full[s], 1);
      tma::mbar_init(&sm.empty[s], 4);  // the consuming warpgroup's warps
    }
    tma::mbar_init(&sm.order[0], 4);
    tma::mbar_init(&sm.order[1], 4);
    for (int w = 0; w < 2; ++w) {
      tma::mbar_init(&sm.aux_full[w], 1);
      tma::mbar_init(&sm.aux_empty[w], 1);
    }
    tma::fence_mbar_init();
  }
  __syncthreads();

  if (wg_id == 0) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
    if (threadIdx.x == 0) {
      int q = 0;  // the block's k-blocks in order
      for (int tile = blockIdx.x, i = 0; tile < total; tile += gridDim.x, ++i) {
        const int m0 = (tile / n_tiles) * kTileM, n0 = (tile % n_tiles) * kTileN;
        for (int kb = 0; kb < n_kb; ++kb, ++q) {
          const int s = q % kPpStages;
          if (q >= kPpStages) tma::mbar_wait(&sm.empty[s], ((q / kPpStages) & 1) ^ 1);
          load_kblock<kDGelu>(sm.a[s], sm.b[s], &map_a, &map_b, kb, m0, n0, &sm.full[s]);
        }
        if constexpr (kDGelu) {  // the tile's aux, for its consumer's epilogue (its k-th tile)
          const int w = i & 1, k = i >> 1;
          if (k >= 1) tma::mbar_wait(&sm.aux_empty[w], (k - 1) & 1);
          tma::mbar_arrive_expect_tx(&sm.aux_full[w], kTileM * kTileN * sizeof(bf16));
          tma::load_3d(sm.out[w][0], &map_aux, n0, m0, 0, &sm.aux_full[w]);
          tma::load_3d(sm.out[w][1], &map_aux, n0 + 64, m0, 0, &sm.aux_full[w]);
        }
      }
    }
    return;
  }
  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");

  const int w = wg_id - 1, wl = (int(threadIdx.x) >> 5) & 3, g = lane >> 2, c = lane & 3;
  const bool leader = (threadIdx.x & 127) == 0;
  bf16* const stage = sm.out[w][0];  // two panels, 16 KB apart
  int i = w;                         // the block's tile counter: this warpgroup takes i = w, w + 2, ...
  for (int tile = blockIdx.x + w * gridDim.x; tile < total; tile += 2 * gridDim.x, i += 2) {
    const int m_tile = tile / n_tiles, m0 = m_tile * kTileM, n0 = (tile % n_tiles) * kTileN;
    float d[2][16][4];
#pragma unroll
    for (int hh = 0; hh < 2; ++hh)
#pragma unroll
      for (int j = 0; j < 16; ++j) d[hh][j][0] = d[hh][j][1] = d[hh][j][2] = d[hh][j][3] = 0.f;
    const int q0 = i * n_kb;
    // The other consumer's tile i-1 (its phase k-1 for w = 0, k for w = 1; it is never two ahead).
    if (i >= 1) tma::mbar_wait(&sm.order[1 - w], ((i - w) / 2 - (w == 0 ? 1 : 0)) & 1);
    for (int kb = 0; kb < n_kb; ++kb) {
      const int q = q0 + kb, s = q % kPpStages;
      tma::mbar_wait(&sm.full[s], (q / kPpStages) & 1);
      wg::fence();
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        const uint64_t db = kDGelu ? wg::smem_desc(sm.b[s] + kk * 16 * 64, 64 * kTileK * sizeof(bf16), 1024)
                                   : wg::smem_desc(sm.b[s] + kk * 16, 16, 1024);
#pragma unroll
        for (int hh = 0; hh < 2; ++hh)
          wg::mma_ss_n128<kDGelu ? 1 : 0>(d[hh], wg::smem_desc(sm.a[s] + hh * 64 * kTileK + kk * 16, 16, 1024), db,
                                          1);
      }
      wg::commit();
      wg::wait<1>();
      if (kb > 0 && lane == 0) tma::mbar_arrive(&sm.empty[(q - 1) % kPpStages]);
    }
    wg::wait<0>();
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) wg::fence_acc(d[hh]);
    if (lane == 0) {
      tma::mbar_arrive(&sm.empty[(q0 + n_kb - 1) % kPpStages]);
      tma::mbar_arrive(&sm.order[w]);
    }

    // Epilogue: each output through the staging panels and two TMA stores (boxes of 64 columns ×
    // 128 rows; rows past M are not written). The panels are rewritten only after the last
    // store has read them.
    // This thread's pair of columns 8j + 2c of row 64hh + 16wl + g + 8r in the staging panels.
    auto stage_at = [&](int hh, int j, int r) {
      return reinterpret_cast<uint32_t*>(stage + (j / 8) * kTileM * 64 +
                                         tiles::swz<64>(hh * 64 + wl * 16 + g + 8 * r, (j % 8) * 8) + 2 * c);
    };
    auto stage_put = [&](int hh, int j, int r, float lo, float hi) { *stage_at(hh, j, r) = pack_bf16(lo, hi); };
    auto flush = [&](const CUtensorMap* map) {
      wg::fence_proxy_async();
      consumer_sync(w);
      if (leader) {
        tma::store_3d(map, n0, m0, 0, stage);
        tma::store_3d(map, n0 + 64, m0, 0, stage + kTileM * 64);
        tma::store_commit();
      }
    };
    auto reclaim = [&] {  // the staging panels free again
      if (leader) tma::store_wait_read();
      consumer_sync(w);
    };
    if constexpr (!kDGelu) {
      reclaim();
      // aux = pre-activation first, then out = gelu(pre) (recomputed from d: no registers kept).
#pragma unroll
      for (int pass = 0; pass < 2; ++pass) {
        if (pass == 1) reclaim();
#pragma unroll
        for (int j = 0; j < 16; ++j) {
          float2 bv = make_float2(0.f, 0.f);
          if (bias) bv = unpack2(*reinterpret_cast<const uint32_t*>(bias + n0 + j * 8 + 2 * c));
#pragma unroll
          for (int hh = 0; hh < 2; ++hh)
#pragma unroll
            for (int r = 0; r < 2; ++r) {
              const float h0 = d[hh][j][2 * r] + bv.x, h1 = d[hh][j][2 * r + 1] + bv.y;
              if (pass == 0) stage_put(hh, j, r, h0, h1);
              else stage_put(hh, j, r, gelu_fast_f(h0), gelu_fast_f(h1));
            }
        }
        flush(pass == 0 ? &map_aux : &map_out);
      }
    } else {
      // aux arrives in the staging panels (rows past M as zeros, where d = 0 too); each thread
      // replaces its own pairs with the gradient, which the stores then take.
      tma::mbar_wait(&sm.aux_full[w], ((i - w) / 2) & 1);
      float cs[16][2];
#pragma unroll
      for (int j = 0; j < 16; ++j) cs[j][0] = cs[j][1] = 0.f;
#pragma unroll
      for (int hh = 0; hh < 2; ++hh)
#pragma unroll
        for (int j = 0; j < 16; ++j)
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            uint32_t* const at = stage_at(hh, j, r);
            const float2 h = unpack2(*at);
            const float x0 = alpha * d[hh][j][2 * r] * gelu_grad_fast_f(h.x);
            const float x1 = alpha * d[hh][j][2 * r + 1] * gelu_grad_fast_f(h.y);
            *at = pack_bf16(x0, x1);
            cs[j][0] += x0, cs[j][1] += x1;
          }
      flush(&map_out);
      if (leader) {  // the panels free for the next aux once the stores have read them
        tma::store_wait_read();
        tma::mbar_arrive(&sm.aux_empty[w]);
      }
      if (part) {  // rows past M have d = 0 (zero-filled A) and add nothing
#pragma unroll
        for (int j = 0; j < 16; ++j)
#pragma unroll
          for (int m = 4; m < 32; m <<= 1) {
            cs[j][0] += __shfl_xor_sync(0xffffffffu, cs[j][0], m);
            cs[j][1] += __shfl_xor_sync(0xffffffffu, cs[j][1], m);
          }
        if (g == 0)
#pragma unroll
          for (int j = 0; j < 16; ++j) {
            sm.colsum[w][wl][j * 8 + 2 * c] = cs[j][0];
            sm.colsum[w][wl][j * 8 + 2 * c + 1] = cs[j][1];
          }
        consumer_sync(w);
        const int t = int(threadIdx.x) & 127;
        part[int64_t(m_tile) * N + n0 + t] =
            sm.colsum[w][0][t] + sm.colsum[w][1][t] + sm.colsum[w][2][t] + sm.colsum[w][3][t];
        consumer_sync(w);  // colsum read before the next tile writes it
      }
    }
  }
  if (leader) tma::store_wait_read();  // the staging panels stay until the last store has read them
}

void check_args(const char* what, int M, int N, int K, std::initializer_list<const void*> ptrs) {
  if (!gelu_gemm_supported(M, N, K))
    throw std::invalid_argument(std::string(what) + ": shape M=" + std::to_string(M) + " N=" + std::to_string(N) +
                                " K=" + std::to_string(K) + " not supported (need sm_90, N % 128 == 0, K % 64 == 0)");
  if (!gelu_gemm_aligned(ptrs)) throw std::invalid_argument(std::string(what) + ": pointers must be 16-byte aligned");
}

template <bool kDGelu>
void launch(const CUtensorMap& map_a, const CUtensorMap& map_b, bf16* out, bf16* aux, const bf16* bias, float* part,
            float alpha, int M, int N, int K, GeluGemmKernel kernel, cudaStream_t stream) {
  const int64_t tiles = int64_t((M + kTileM - 1) / kTileM) * (N / kTileN);
  // Outputs in boxes of 64 columns: 128 rows (the pingpong kernel's whole tiles) or 64 (the tiled
  // kernel's warpgroup halves).
  const uint32_t box_rows = kernel == GeluGemmKernel::Pingpong ? 128 : 64;
  const CUtensorMap map_out = tma::make_bf16_map_3d(out, N, M, 1, N, int64_t(M) * N, 64, box_rows);
  // gemm_bias_gelu_aux's second output, or gemm_dgelu's aux input (read by the pingpong kernel).
  const CUtensorMap map_aux = tma::make_bf16_map_3d(aux, N, M, 1, N, int64_t(M) * N, 64, box_rows);
  if (kernel == GeluGemmKernel::Pingpong) {
    static const int n_sm = [] {
      int dev = 0, n = 0;
      CUDA_CHECK(cudaGetDevice(&dev));
      CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
      return n;
    }();
    const int smem = int(sizeof(GeluGemmPpSmem)) + 1024;
    set_smem_once(reinterpret_cast<const void*>(gelu_gemm_pp_kernel<kDGelu>), smem, true);
    const unsigned grid = unsigned(std::min<int64_t>(tiles, n_sm));
    gelu_gemm_pp_kernel<kDGelu><<<grid, kPpThreads, smem, stream>>>(map_a, map_b, map_out, map_aux, bias, part, alpha,
                                                                    M, N, K);
  } else if (kernel == GeluGemmKernel::Tiled) {
    const int smem = int(sizeof(GeluGemmSmem)) + 1024;
    set_smem_once(reinterpret_cast<const void*>(gelu_gemm_kernel<kDGelu, true>), smem, true);
    gelu_gemm_kernel<kDGelu, true><<<unsigned(tiles), kThreads, smem, stream>>>(map_a, map_b, map_out, map_aux, out,
                                                                                aux, bias, part, alpha, M, N, K);
  } else {
    const int smem = int(sizeof(GeluGemmSmem)) + 1024;
    set_smem_once(reinterpret_cast<const void*>(gelu_gemm_kernel<kDGelu, false>), smem, true);
    gelu_gemm_kernel<kDGelu, false><<<unsigned(tiles), kThreads, smem, stream>>>(map_a, map_b, map_out, map_aux, out,
                                                                                 aux, bias, part, alpha, M, N, K);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace

bool gelu_gemm_aligned(std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs)
    if ((reinterpret_cast<uintptr_t>(p) & 15) != 0) return false;
  return true;
}

bool gelu_gemm_supported(int M, int N, int K) {
  static const int major = [] {
    int dev = 0, cc = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&cc, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
      (void)cudaGetLastError();
      return 0;
    }
    return cc;
  }();
  return major == 9 && M >= 1 && N >= kTileN && N % kTileN == 0 && K >= kTileK && K % kTileK == 0;
}

void gemm_bias_gelu_aux(bf16* out, bf16* aux, const bf16* A, const bf16* B, const bf16* bias, int M, int N, int K,
                        cudaStream_t stream, GeluGemmKernel kernel) {
  check_args("gemm_bias_gelu_aux", M, N, K, {out, aux, A, B, bias});
  const CUtensorMap map_a = tma::make_bf16_map_3d(A, K, M, 1, K, int64_t(M) * K, kTileK, kTileM);
  const CUtensorMap map_b = tma::make_bf16_map_3d(B, K, N, 1, K, int64_t(N) * K, kTileK, kTileN);
  launch<false>(map_a, map_b, out, aux, bias, nullptr, 1.f, M, N, K, kernel, stream);
}

void gemm_dgelu(bf16* out, float* dbias, float* scratch, const bf16* A, const bf16* B, const bf16* aux, float alpha,
                int M, int N, int K, cudaStream_t stream, GeluGemmKernel kernel) {
  check_args("gemm_dgelu", M, N, K, {out, A, B, aux, scratch});
  if (dbias && !scratch) throw std::invalid_argument("gemm_dgelu: a bias gradient needs scratch");
  const CUtensorMap map_a = tma::make_bf16_map_3d(A, K, M, 1, K, int64_t(M) * K, kTileK, kTileM);
  const CUtensorMap map_b = tma::make_bf16_map_3d(B, N, K, 1, N, int64_t(K) * N, 64, kTileK);
  launch<true>(map_a, map_b, out, const_cast<bf16*>(aux), nullptr, dbias ? scratch : nullptr, alpha, M, N, K, kernel,
               stream);
  if (dbias) bias_accumulate(dbias, scratch, N, stream, (M + kTileM - 1) / kTileM);
}

}  // namespace pg::kernels
