// Gather / normalise / scatter of grouped Newton-Schulz (math and layouts: newton_schulz.cuh).
#include <algorithm>

#include "backend/cuda/check.hpp"
#include "kernels/newton_schulz.cuh"
#include "kernels/ns_tile.cuh"

namespace pg::kernels {
namespace {

__global__ void ns_gather_kernel(NsBatch b, const float* base, const int64_t* offsets, const uint8_t* flags,
                                 float* in, float* partial) {
  __shared__ ns_tile::Tile tile;
  __shared__ float scratch[ns_tile::kRows];
  const int k = blockIdx.z;
  const float* src = base + offsets[k];
  float* dst = in + int64_t(k) * b.stride;
  float ss = 0.f;
  ns_tile::to_wide(
      b.m, b.n, flags[k] & kNsTall, tile, [&](int64_t s) { return src[s]; },
      [&](int64_t w, float v) {
        dst[w] = v;
        ss += v * v;
      });
  ss = ns_tile::block_total(ss, scratch);
  if (threadIdx.x == 0 && threadIdx.y == 0) partial[int64_t(k) * gridDim.x * gridDim.y + ns_tile::tile_index()] = ss;
}

// One block of 256 per matrix: the partial sums in fp64, strided per thread then a fixed tree.
__global__ void ns_scale_kernel(const float* partial, int tiles, double safety, double eps, float* scale) {
  __shared__ double warp_totals[8];
  const int k = blockIdx.x;
  double s = 0.0;
  for (int t = threadIdx.x; t < tiles; t += blockDim.x) s += double(partial[int64_t(k) * tiles + t]);
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if ((threadIdx.x & 31) == 0) warp_totals[threadIdx.x >> 5] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0.0;
    for (int w = 0; w < int(blockDim.x >> 5); ++w) total += warp_totals[w];
    scale[k] = float(1.0 / (sqrt(total) * safety + eps));
  }
}

// grid (chunks, count); 4 elements per thread per iteration where the shape allows.
template <class T>
__global__ void ns_normalise_kernel(NsBatch b, const float* in, const float* scale, T* x) {
  const int k = blockIdx.y;
  const float s = scale[k];
  const int64_t mn = int64_t(b.m) * b.n;
  const float* src = in + int64_t(k) * b.stride;
  T* dst = x + int64_t(k) * b.stride;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < mn; i += int64_t(gridDim.x) * blockDim.x)
    ns_tile::store(dst, i, src[i] * s);
}

template <class T>
__global__ void ns_scatter_kernel(NsBatch b, const T* x, const int64_t* offsets, const uint8_t* flags, float* base) {
  __shared__ ns_tile::Tile tile;
  const int k = blockIdx.z;
  const T* src = x + int64_t(k) * b.stride;
  float* dst = base + offsets[k];
  ns_tile::from_wide(
      b.m, b.n, flags[k] & kNsTall, tile, [&](int64_t w) { return ns_tile::load(src, w); },
      [&](int64_t s, float v) { dst[s] = v; });
}

// Bits: uint16_t for bf16 / fp16, float for fp32 (a copy, no arithmetic).
template <class Bits>
__global__ void ns_mirror_kernel(int m, int64_t stride_mm, Bits* a) {
  __shared__ Bits tile[kNsTile][kNsTile + 1];
  const int h = m / 2, k = blockIdx.z;
  const int i0 = blockIdx.x * kNsTile, j0 = blockIdx.y * kNsTile, tx = threadIdx.x;
  Bits* s = a + int64_t(k) * stride_mm;
  for (int r = threadIdx.y; r < kNsTile; r += ns_tile::kRows) {  // upper right: row j, column h + i
    const int j = j0 + r, i = i0 + tx;
    if (j < h && i < h) tile[r][tx] = s[int64_t(j) * m + h + i];
  }
  __syncthreads();
  for (int r = threadIdx.y; r < kNsTile; r += ns_tile::kRows) {  // lower left: row h + i, column j
    const int i = i0 + r, j = j0 + tx;
    if (i < h && j < h) s[int64_t(h + i) * m + j] = tile[tx][r];
  }
}

template <class Bits>
void mirror(int count, int m, int64_t stride_mm, Bits* a, cudaStream_t stream) {
  if (count == 0) return;
  const unsigned t = unsigned((m / 2 + kNsTile - 1) / kNsTile);
  ns_mirror_kernel<<<dim3(t, t, unsigned(count)), ns_tile::block(), 0, stream>>>(m, stride_mm, a);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void normalise(const NsBatch& b, const float* in, const float* scale, T* x, cudaStream_t stream) {
  if (b.count == 0) return;
  const int64_t mn = int64_t(b.m) * b.n;
  const unsigned chunks = unsigned(std::min<int64_t>((mn + 1023) / 1024, 256));
  ns_normalise_kernel<<<dim3(chunks, unsigned(b.count)), 256, 0, stream>>>(b, in, scale, x);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void scatter(const NsBatch& b, const T* x, const int64_t* offsets, const uint8_t* flags, float* base,
             cudaStream_t stream) {
  if (b.count == 0) return;
  ns_scatter_kernel<<<ns_tile::grid(b), ns_tile::block(), 0, stream>>>(b, x, offsets, flags, base);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void ns_gather(const NsBatch& b, const float* base, const int64_t* offsets, const uint8_t* flags, float* in,
               float* partial, cudaStream_t stream) {
  if (b.count == 0) return;
  ns_gather_kernel<<<ns_tile::grid(b), ns_tile::block(), 0, stream>>>(b, base, offsets, flags, in, partial);
  CUDA_CHECK_LAUNCH();
}

void ns_scale(const NsBatch& b, const float* partial, double safety, double eps, float* scale, cudaStream_t stream) {
  if (b.count == 0) return;
  ns_scale_kernel<<<unsigned(b.count), 256, 0, stream>>>(partial, ns_tiles(b.m, b.n), safety, eps, scale);
  CUDA_CHECK_LAUNCH();
}

void ns_normalise(const NsBatch& b, const float* in, const float* scale, bf16* x, cudaStream_t stream) {
  normalise(b, in, scale, x, stream);
}
void ns_normalise(const NsBatch& b, const float* in, const float* scale, f16* x, cudaStream_t stream) {
  normalise(b, in, scale, x, stream);
}
void ns_normalise(const NsBatch& b, const float* in, const float* scale, float* x, cudaStream_t stream) {
  normalise(b, in, scale, x, stream);
}

void ns_scatter(const NsBatch& b, const bf16* x, const int64_t* offsets, const uint8_t* flags, float* base,
                cudaStream_t stream) {
  scatter(b, x, offsets, flags, base, stream);
}
void ns_scatter(const NsBatch& b, const f16* x, const int64_t* offsets, const uint8_t* flags, float* base,
                cudaStream_t stream) {
  scatter(b, x, offsets, flags, base, stream);
}
void ns_scatter(const NsBatch& b, const float* x, const int64_t* offsets, const uint8_t* flags, float* base,
                cudaStream_t stream) {
  scatter(b, x, offsets, flags, base, stream);
}

void ns_mirror(int count, int m, int64_t stride_mm, bf16* a, cudaStream_t stream) {
  mirror(count, m, stride_mm, reinterpret_cast<uint16_t*>(a), stream);
}
void ns_mirror(int count, int m, int64_t stride_mm, f16* a, cudaStream_t stream) {
  mirror(count, m, stride_mm, reinterpret_cast<uint16_t*>(a), stream);
}
void ns_mirror(int count, int m, int64_t stride_mm, float* a, cudaStream_t stream) {
  mirror(count, m, stride_mm, a, stream);
}

}  // namespace pg::kernels
