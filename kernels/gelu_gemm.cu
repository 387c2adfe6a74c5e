// The MLP's GEMMs with a GELU epilogue (layout and design: gelu_gemm.cuh).
#include <algorithm>
#include <stdexcept>
#include <string>

#include "backend/cuda/check.hpp"
#include "backend/cuda/device.hpp"
#include "kernels/attention_tiles.cuh"
#include "kernels/bias.cuh"
#include "kernels/common.cuh"
#include "kernels/gelu_gemm.cuh"
#include "kernels/tma.cuh"
#include "kernels/wgmma.cuh"

namespace pg::kernels {
namespace {

using tiles::pack_bf16;  // two floats to a bf16x2 word

constexpr int kTileM = 128, kTileN = 128, kTileK = 64;
constexpr uint32_t kStageBytes = (kTileM + kTileN) * kTileK * sizeof(bf16);

__device__ __forceinline__ float2 unpack2(uint32_t v) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&v));
}

// Issues k-block kb of the tile at (m0, n0) into stage buffers a, b, completing on bar: A's
// [128][64] box, and B's [128 n][64 k] box (K-major) or two [64 k][64 n] panels (MN-major, kDGelu).
// kPair: the CTA of rank r in a cluster of two, whose tiles share m0, loads A's rows 64r.. and
// multicasts them to both (map_a's box is [64][64]); each CTA's barrier expects the whole stage.
template <bool kDGelu, bool kPair>
__device__ __forceinline__ void load_kblock(bf16* a, bf16* b, const CUtensorMap* map_a, const CUtensorMap* map_b,
                                            int kb, int m0, int n0, uint64_t* bar, uint32_t rank) {
  tma::mbar_arrive_expect_tx(bar, kStageBytes);
  if constexpr (kPair)
    tma::load_3d_multicast(a + rank * 64 * kTileK, map_a, kb * kTileK, m0 + 64 * int(rank), 0, bar, 3);
  else
    tma::load_3d(a, map_a, kb * kTileK, m0, 0, bar);
  if constexpr (kDGelu) {
    tma::load_3d(b, map_b, n0, kb * kTileK, 0, bar);
    tma::load_3d(b + 64 * kTileK, map_b, n0 + 64, kb * kTileK, 0, bar);
  } else {
    tma::load_3d(b, map_b, kb * kTileK, n0, 0, bar);
  }
}

// One block an SM, three warpgroups: warpgroup 0 produces (one thread issues the TMA copies of
// every k-block of the block's tiles, in order, into a ring of five stages; setmaxnreg gives its
// registers to the others), warpgroups 1 and 2 consume the block's tiles alternately, each a whole
// 128×128 tile (two m64n128k16 products a k step, 128 accumulators a thread), so that one's
// epilogue runs while the other's products use the tensor cores. The ring hands the k-blocks out
// in tile order, and an order barrier keeps the two warpgroups' main loops one after the other:
// a consumer starts tile i's only once the other has finished tile i-1's. That also keeps the
// stage barriers' phases unambiguous: when a consumer waits for k-block q of a stage, every
// earlier use of the stage has completed, so the parity names q's phase.
// Stage s holds the block's k-blocks q = s, s + kStages, ...: A as [128 rows][64 k] and B as [128 n][64 k]
// (K-major, gemm_bias_gelu_aux) or as two panels [64 k][64 n] of columns n0.., n0+64.. (MN-major,
// gemm_dgelu), all in the 128-byte swizzle TMA writes and wgmma reads.
// kPair (GeluGemmKernel::Pair): clusters of two CTAs take pairs of tiles side by side (the same
// rows of A, n tiles 2j and 2j + 1), each loading half of A's k-block for both (load_kblock); a
// stage is then refilled only once both CTAs' consumers have released it (each consumer warp
// arrives on both CTAs' empty barriers), and neither CTA exits before the other is done with its
// barriers (cluster_sync). It halves A's traffic from L2 (a quarter of the kernel's). The grid
// holds no more clusters than run at once (cudaOccupancyMaxActiveClusters): a persistent CTA
// that waits for a second wave doubles the kernel's time.
// (Tried and removed: one pair of staging panels for both consumers, taken in tile order, with a
// sixth stage in the 32 KB that frees: 0.557 ms against 0.514 for the forward, bench/RESULTS.md.)
constexpr int kThreads = 384;
struct GeluGemmSmem {
  static constexpr int kStages = 5;
  alignas(1024) bf16 a[kStages][kTileM * kTileK];
  alignas(1024) bf16 b[kStages][kTileN * kTileK];
  // Per consumer, two [128][64] panels of an output.
  alignas(1024) bf16 out[2][2][kTileM * 64];
  uint64_t full[kStages], empty[kStages];
  uint64_t order[2];  // order[w]: consumer w's main loop of a tile is done (one arrival a warp)
  // gemm_dgelu: the producer loads each tile's aux into its consumer's staging panels (aux_full),
  // once the consumer's last store from them has read them (aux_empty).
  uint64_t aux_full[2], aux_empty[2];
};

__device__ __forceinline__ void consumer_sync(int w) {  // one consumer warpgroup; ids as constants
  if (w == 0) asm volatile("bar.sync 1, 128;\n" ::: "memory");
  else asm volatile("bar.sync 2, 128;\n" ::: "memory");
}

static_assert(sizeof(GeluGemmSmem) + 1024 <= 232448, "over the 227 KB a block may opt in to on an H100/H200");

template <bool kDGelu, bool kPair>
__global__ void __launch_bounds__(kThreads, 1)
    gelu_gemm_kernel(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
                        const __grid_constant__ CUtensorMap map_out, const __grid_constant__ CUtensorMap map_aux,
                        const bf16* __restrict__ bias, float* __restrict__ part,
                        float alpha, int M, int N, int K) {
  extern __shared__ unsigned char smem_raw[];
  auto& sm = wg::aligned_smem<GeluGemmSmem>(smem_raw);
  constexpr int kStages = GeluGemmSmem::kStages;
  const int n_tiles = N / kTileN, n_kb = K / kTileK;
  const int wg_id = wg::warpgroup_index(), lane = int(threadIdx.x) & 31;
  // Work units: tiles, or (kPair) pairs of tiles, a CTA's the unit's tile of its rank.
  const uint32_t rank = kPair ? tma::cluster_rank() : 0;
  const int per_row = kPair ? n_tiles / 2 : n_tiles, total = ((M + kTileM - 1) / kTileM) * per_row;
  const int first = kPair ? int(blockIdx.x) / 2 : int(blockIdx.x), stride = kPair ? int(gridDim.x) / 2 : int(gridDim.x);
  auto tile_of = [&](int unit, int& m_tile, int& n0) {
    m_tile = unit / per_row;
    n0 = (kPair ? 2 * (unit % per_row) + int(rank) : unit % per_row) * kTileN;
  };
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      tma::mbar_init(&sm.full[s], 1);
      tma::mbar_init(&sm.empty[s], kPair ? 8 : 4);  // the consuming warpgroup's warps (of both CTAs)
    }
    tma::mbar_init(&sm.order[0], 4);
    tma::mbar_init(&sm.order[1], 4);
    for (int w = 0; w < 2; ++w) {
      tma::mbar_init(&sm.aux_full[w], 1);
      tma::mbar_init(&sm.aux_empty[w], 1);
    }
    tma::fence_mbar_init();
  }
  if constexpr (kPair) tma::cluster_sync();  // both CTAs' barriers ready before either signals the other's
  else __syncthreads();

  if (wg_id == 0) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
    if (threadIdx.x == 0) {
      int q = 0;  // the block's k-blocks in order
      for (int unit = first, i = 0; unit < total; unit += stride, ++i) {
        int m_tile, n0;
        tile_of(unit, m_tile, n0);
        const int m0 = m_tile * kTileM;
        for (int kb = 0; kb < n_kb; ++kb, ++q) {
          const int s = q % kStages;
          if (q >= kStages) tma::mbar_wait(&sm.empty[s], ((q / kStages) & 1) ^ 1);
          load_kblock<kDGelu, kPair>(sm.a[s], sm.b[s], &map_a, &map_b, kb, m0, n0, &sm.full[s], rank);
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
    if constexpr (kPair) tma::cluster_sync();
    return;
  }
  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");

  const int w = wg_id - 1, wl = (int(threadIdx.x) >> 5) & 3, g = lane >> 2, c = lane & 3;
  const bool leader = (threadIdx.x & 127) == 0;
  bf16* const stage = sm.out[w][0];  // two panels, 16 KB apart
  int i = w;                         // the block's tile counter: this warpgroup takes i = w, w + 2, ...
  auto release = [&](int q) {  // this warp is done with k-block q's stage
    if (lane == 0) {
      tma::mbar_arrive(&sm.empty[q % kStages]);
      if constexpr (kPair) tma::mbar_arrive_remote(&sm.empty[q % kStages], rank ^ 1);
    }
  };
  for (int unit = first + w * stride; unit < total; unit += 2 * stride, i += 2) {
    int m_tile, n0;
    tile_of(unit, m_tile, n0);
    const int m0 = m_tile * kTileM;
    float d[2][16][4];
#pragma unroll
    for (int hh = 0; hh < 2; ++hh)
#pragma unroll
      for (int j = 0; j < 16; ++j) d[hh][j][0] = d[hh][j][1] = d[hh][j][2] = d[hh][j][3] = 0.f;
    const int q0 = i * n_kb;
    // The other consumer's tile i-1 (its phase k-1 for w = 0, k for w = 1; it is never two ahead).
    if (i >= 1) tma::mbar_wait(&sm.order[1 - w], ((i - w) / 2 - (w == 0 ? 1 : 0)) & 1);
    for (int kb = 0; kb < n_kb; ++kb) {
      const int q = q0 + kb, s = q % kStages;
      tma::mbar_wait(&sm.full[s], (q / kStages) & 1);
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
      if (kb > 0) release(q - 1);
    }
    wg::wait<0>();
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) wg::fence_acc(d[hh]);
    release(q0 + n_kb - 1);
    if (lane == 0) tma::mbar_arrive(&sm.order[w]);

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
      // aux = pre-activation first (the bias added into d), then out = gelu(pre), computed in
      // place while the aux stores read the panels.
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const float2 bv =
            bias ? unpack2(*reinterpret_cast<const uint32_t*>(bias + n0 + j * 8 + 2 * c)) : make_float2(0.f, 0.f);
#pragma unroll
        for (int hh = 0; hh < 2; ++hh)
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            d[hh][j][2 * r] += bv.x, d[hh][j][2 * r + 1] += bv.y;
            stage_put(hh, j, r, d[hh][j][2 * r], d[hh][j][2 * r + 1]);
          }
      }
      flush(&map_aux);
#pragma unroll
      for (int hh = 0; hh < 2; ++hh)
#pragma unroll
        for (int j = 0; j < 16; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) d[hh][j][e] = gelu_fast_f(d[hh][j][e]);
      reclaim();
#pragma unroll
      for (int j = 0; j < 16; ++j)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh)
#pragma unroll
          for (int r = 0; r < 2; ++r) stage_put(hh, j, r, d[hh][j][2 * r], d[hh][j][2 * r + 1]);
      flush(&map_out);
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
            const float x0 = d[hh][j][2 * r] * gelu_grad_fast_f(h.x, alpha);
            const float x1 = d[hh][j][2 * r + 1] * gelu_grad_fast_f(h.y, alpha);
            *at = pack_bf16(x0, x1);
            cs[j][0] += x0, cs[j][1] += x1;
          }
      flush(&map_out);
      if (part) {  // while the stores read the panels; rows past M have d = 0 (zero-filled A) and add nothing
#pragma unroll
        for (int j = 0; j < 16; ++j)
#pragma unroll
          for (int m = 4; m < 32; m <<= 1) {
            cs[j][0] += __shfl_xor_sync(0xffffffffu, cs[j][0], m);
            cs[j][1] += __shfl_xor_sync(0xffffffffu, cs[j][1], m);
          }
        // Each warp its own row of `part` (kPartRows a 128-row tile), so no barrier and no shared
        // memory: lanes g = 0 hold the warp's sums of columns 8j + 2c, 8j + 2c + 1.
        if (g == 0) {
          float* const row = part + (int64_t(m_tile) * kPartRows + wl) * N + n0 + 2 * c;
#pragma unroll
          for (int j = 0; j < 16; ++j) *reinterpret_cast<float2*>(row + j * 8) = make_float2(cs[j][0], cs[j][1]);
        }
      }
      if (leader) {  // the panels free for the next aux once the stores have read them
        tma::store_wait_read();
        tma::mbar_arrive(&sm.aux_empty[w]);
      }
    }
  }
  if (leader) tma::store_wait_read();  // the staging panels stay until the last store has read them
  if constexpr (kPair) tma::cluster_sync();
}

void check_args(const char* what, int M, int N, int K, std::initializer_list<const void*> ptrs) {
  if (!gelu_gemm_supported(M, N, K))
    throw std::invalid_argument(std::string(what) + ": shape M=" + std::to_string(M) + " N=" + std::to_string(N) +
                                " K=" + std::to_string(K) + " not supported (need sm_90, N % 128 == 0, K % 64 == 0)");
  if (!gelu_gemm_aligned(ptrs)) throw std::invalid_argument(std::string(what) + ": pointers must be 16-byte aligned");
}

// A launch of clusters of two CTAs of kThreads threads with `smem` bytes of shared memory each.
cudaLaunchConfig_t pair_config(int smem, cudaStream_t stream) {
  static cudaLaunchAttribute attr = [] {
    cudaLaunchAttribute a{};
    a.id = cudaLaunchAttributeClusterDimension;
    a.val.clusterDim.x = 2, a.val.clusterDim.y = 1, a.val.clusterDim.z = 1;
    return a;
  }();
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(2), cfg.blockDim = dim3(kThreads), cfg.dynamicSmemBytes = size_t(smem), cfg.stream = stream;
  cfg.attrs = &attr, cfg.numAttrs = 1;
  return cfg;
}

// The clusters of two of the kDGelu kernel that run at once (cudaOccupancyMaxActiveClusters),
// asked once.
template <bool kDGelu>
int max_pairs() {
  static const int n = [] {
    const int smem = int(sizeof(GeluGemmSmem)) + 1024;
    const void* fn = reinterpret_cast<const void*>(gelu_gemm_kernel<kDGelu, true>);
    set_smem_once(fn, smem, true);
    const cudaLaunchConfig_t cfg = pair_config(smem, nullptr);
    int clusters = 0;
    CUDA_CHECK(cudaOccupancyMaxActiveClusters(&clusters, fn, &cfg));
    return std::max(clusters, 1);
  }();
  return n;
}

// The kernel of one launch: pairs of CTAs where the kernel asks for them and the tiles of a row
// pair up, else single CTAs. A in boxes of 64 k × 128 rows (× 64 rows for a pair's halves), B's
// map given (its layout differs between the two GEMMs).
template <bool kDGelu, bool kPair>
void launch_kernel(const bf16* A, const CUtensorMap& map_b, bf16* out, bf16* aux, const bf16* bias, float* part,
                   float alpha, int M, int N, int K, cudaStream_t stream) {
  const int64_t tiles = int64_t((M + kTileM - 1) / kTileM) * (N / kTileN);
  const CUtensorMap map_a = tma::make_bf16_map_3d(A, K, M, 1, K, int64_t(M) * K, kTileK, kPair ? 64 : kTileM);
  // Outputs in boxes of 64 columns × 128 rows; map_aux is gemm_bias_gelu_aux's second output, or
  // gemm_dgelu's aux input.
  const CUtensorMap map_out = tma::make_bf16_map_3d(out, N, M, 1, N, int64_t(M) * N, 64, kTileM);
  const CUtensorMap map_aux = tma::make_bf16_map_3d(aux, N, M, 1, N, int64_t(M) * N, 64, kTileM);
  const int smem = int(sizeof(GeluGemmSmem)) + 1024;
  const auto kernel = gelu_gemm_kernel<kDGelu, kPair>;
  set_smem_once(reinterpret_cast<const void*>(kernel), smem, true);
  if constexpr (kPair) {
    cudaLaunchConfig_t cfg = pair_config(smem, stream);
    // As many clusters as the GPU runs at once (a cluster's SMs share a GPC, so that may be fewer
    // than half the SMs), one pair of tiles each at most.
    cfg.gridDim = dim3(unsigned(2 * std::min<int64_t>(tiles / 2, max_pairs<kDGelu>())));
    CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, map_a, map_b, map_out, map_aux, bias, part, alpha, M, N, K));
  } else {
    static const int n_sm = cuda::sm_count();
    const unsigned grid = unsigned(std::min<int64_t>(tiles, n_sm));
    kernel<<<grid, kThreads, smem, stream>>>(map_a, map_b, map_out, map_aux, bias, part, alpha, M, N, K);
  }
  CUDA_CHECK_LAUNCH();
}

template <bool kDGelu>
void launch(const bf16* A, const CUtensorMap& map_b, bf16* out, bf16* aux, const bf16* bias, float* part, float alpha,
            int M, int N, int K, GeluGemmKernel kernel, cudaStream_t stream) {
  if (kernel == GeluGemmKernel::Pair && (N / kTileN) % 2 == 0)
    return launch_kernel<kDGelu, true>(A, map_b, out, aux, bias, part, alpha, M, N, K, stream);
  launch_kernel<kDGelu, false>(A, map_b, out, aux, bias, part, alpha, M, N, K, stream);
}

}  // namespace

int gelu_gemm_pair_clusters(bool dgelu) { return dgelu ? max_pairs<true>() : max_pairs<false>(); }

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
  const CUtensorMap map_b = tma::make_bf16_map_3d(B, K, N, 1, K, int64_t(N) * K, kTileK, kTileN);
  launch<false>(A, map_b, out, aux, bias, nullptr, 1.f, M, N, K, kernel, stream);
}

void gemm_dgelu(bf16* out, float* dbias, float* scratch, const bf16* A, const bf16* B, const bf16* aux, float alpha,
                int M, int N, int K, cudaStream_t stream, GeluGemmKernel kernel) {
  check_args("gemm_dgelu", M, N, K, {out, A, B, aux, scratch});
  if (dbias && !scratch) throw std::invalid_argument("gemm_dgelu: a bias gradient needs scratch");
  const CUtensorMap map_b = tma::make_bf16_map_3d(B, N, K, 1, N, int64_t(K) * N, 64, kTileK);
  launch<true>(A, map_b, out, const_cast<bf16*>(aux), nullptr, dbias ? scratch : nullptr, alpha, M, N, K, kernel,
               stream);
  if (dbias) bias_accumulate(dbias, scratch, N, stream, (M + kTileM - 1) / kTileM * kPartRows);
}

}  // namespace pg::kernels
