// Device helpers shared by newton_schulz.cu and muon.cu: walking one 32 x 32 tile of a wide
// m x n matrix between its source layout (m x n, or n x m when tall) and the wide layout, with
// both sides coalesced (a tall tile goes through shared memory), and the block sum of a tile.
// Block (32, 8): threadIdx.x runs along the contiguous dimension, each thread covers 4 rows.
// Grid: blockIdx.x = tile along n, blockIdx.y = tile along m (see newton_schulz.cuh).
#pragma once
#include "kernels/common.cuh"
#include "kernels/newton_schulz.cuh"

namespace pg::kernels::ns_tile {

constexpr int kRows = 8;  // blockDim.y
using Tile = float[kNsTile][kNsTile + 1];

// For every element of the tile: v = read(source index); write(wide index, v).
template <class Read, class Write>
__device__ __forceinline__ void to_wide(int m, int n, bool tall, Tile& tile, Read read, Write write) {
  const int i0 = blockIdx.y * kNsTile, j0 = blockIdx.x * kNsTile, tx = threadIdx.x;
  if (!tall) {
    for (int r = threadIdx.y; r < kNsTile; r += kRows) {
      const int i = i0 + r, j = j0 + tx;
      if (i < m && j < n) write(int64_t(i) * n + j, read(int64_t(i) * n + j));
    }
    return;
  }
  for (int r = threadIdx.y; r < kNsTile; r += kRows) {  // source rows j, columns i
    const int j = j0 + r, i = i0 + tx;
    if (j < n && i < m) tile[r][tx] = read(int64_t(j) * m + i);
  }
  __syncthreads();
  for (int r = threadIdx.y; r < kNsTile; r += kRows) {
    const int i = i0 + r, j = j0 + tx;
    if (i < m && j < n) write(int64_t(i) * n + j, tile[tx][r]);
  }
}

// For every element of the tile: v = read(wide index); write(source index, v).
template <class Read, class Write>
__device__ __forceinline__ void from_wide(int m, int n, bool tall, Tile& tile, Read read, Write write) {
  const int i0 = blockIdx.y * kNsTile, j0 = blockIdx.x * kNsTile, tx = threadIdx.x;
  if (!tall) {
    for (int r = threadIdx.y; r < kNsTile; r += kRows) {
      const int i = i0 + r, j = j0 + tx;
      if (i < m && j < n) write(int64_t(i) * n + j, read(int64_t(i) * n + j));
    }
    return;
  }
  for (int r = threadIdx.y; r < kNsTile; r += kRows) {
    const int i = i0 + r, j = j0 + tx;
    if (i < m && j < n) tile[r][tx] = read(int64_t(i) * n + j);
  }
  __syncthreads();
  for (int r = threadIdx.y; r < kNsTile; r += kRows) {  // source rows j, columns i
    const int j = j0 + r, i = i0 + tx;
    if (j < n && i < m) write(int64_t(j) * m + i, tile[tx][r]);
  }
}

// Sum of v over the (32, 8) block, in a fixed order; the total is valid in thread (0, 0).
// Each row of the block is one warp.
__device__ __forceinline__ float block_total(float v, float* scratch) {
  v = warp_sum(v);
  if (threadIdx.x == 0) scratch[threadIdx.y] = v;
  __syncthreads();
  if (threadIdx.y == 0) v = warp_sum(threadIdx.x < kRows ? scratch[threadIdx.x] : 0.f);
  return v;
}

__device__ __forceinline__ int tile_index() { return blockIdx.y * gridDim.x + blockIdx.x; }

inline dim3 grid(const NsBatch& b) {
  return dim3(unsigned((b.n + kNsTile - 1) / kNsTile), unsigned((b.m + kNsTile - 1) / kNsTile), unsigned(b.count));
}
inline dim3 block() { return dim3(32, kRows); }

__device__ __forceinline__ float load(const bf16* p, int64_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ float load(const f16* p, int64_t i) { return __half2float(p[i]); }
__device__ __forceinline__ float load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ void store(bf16* p, int64_t i, float v) { p[i] = __float2bfloat16_rn(v); }
__device__ __forceinline__ void store(f16* p, int64_t i, float v) { p[i] = __float2half_rn(v); }
__device__ __forceinline__ void store(float* p, int64_t i, float v) { p[i] = v; }

}  // namespace pg::kernels::ns_tile
