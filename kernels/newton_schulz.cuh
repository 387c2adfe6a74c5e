// The non-GEMM parts of Newton-Schulz on the GPU (the GEMMs are cuBLASLt strided batches, driven
// by src/optim/cuda_newton_schulz.cpp). One shape group at a time: `count` matrices of one wide
// shape m x n (m <= n), stacked in buffers with `stride` elements from one matrix to the next
// (stride >= m*n, a multiple of 8 so every matrix starts 16-byte aligned for cuBLASLt).
//
// A source matrix k lives at base + offsets[k], row-major: m x n, or n x m when flags[k] has
// kNsTall (it is then transposed on the way in and out, so NS always iterates on the wide side).
//
//   ns_gather    in[k] = wide(source k) (fp32), partial[k, t] = Σ over tile t of in[k]²
//   ns_scale     scale[k] = 1 / (sqrt(Σ_t partial[k, t]) · safety + eps)     (Σ in fp64, fixed order)
//   ns_normalise x[k] = T(in[k] · scale[k])                                  T = bf16 | fp16 | fp32
//   ns_scatter   source k = float(x[k]), transposed back when tall
//   ns_mirror    for symmetric m x m matrices computed by blocks (m = 2h): the lower-left h x h
//                block = the transpose of the upper-right one, a[k] at a + k·stride_mm
//                (grid (h/32, h/32, count), block (32, 8), shared-memory tile)
//
// Tiles: 32 x 32 of the wide matrix, blockIdx.x along n, blockIdx.y along m, blockIdx.z = k,
// block (32, 8); a tall matrix goes through a shared-memory tile so that both the read and the
// write are coalesced. partial is [count, ns_tiles(m, n)], tile t = blockIdx.y·tiles_n + blockIdx.x;
// whoever writes `in` (ns_gather, or Muon's fused momentum kernel, muon.cuh) writes partial too.
// Every result is deterministic (no atomics).
#pragma once
#include <cstdint>

#include "kernels/types.cuh"

namespace pg::kernels {

constexpr int kNsTile = 32;
constexpr uint8_t kNsTall = 1;  // flags bit: the source is stored n x m

struct NsBatch {
  int count = 0;       // matrices in the group
  int m = 0, n = 0;    // wide shape, m <= n
  int64_t stride = 0;  // elements between consecutive matrices of in / x
};

inline int ns_tiles(int m, int n) { return ((m + kNsTile - 1) / kNsTile) * ((n + kNsTile - 1) / kNsTile); }

void ns_gather(const NsBatch& b, const float* base, const int64_t* offsets, const uint8_t* flags, float* in,
               float* partial, cudaStream_t stream);
void ns_scale(const NsBatch& b, const float* partial, double safety, double eps, float* scale, cudaStream_t stream);
void ns_normalise(const NsBatch& b, const float* in, const float* scale, bf16* x, cudaStream_t stream);
void ns_normalise(const NsBatch& b, const float* in, const float* scale, f16* x, cudaStream_t stream);
void ns_normalise(const NsBatch& b, const float* in, const float* scale, float* x, cudaStream_t stream);
void ns_scatter(const NsBatch& b, const bf16* x, const int64_t* offsets, const uint8_t* flags, float* base,
                cudaStream_t stream);
void ns_scatter(const NsBatch& b, const f16* x, const int64_t* offsets, const uint8_t* flags, float* base,
                cudaStream_t stream);
void ns_scatter(const NsBatch& b, const float* x, const int64_t* offsets, const uint8_t* flags, float* base,
                cudaStream_t stream);

void ns_mirror(int count, int m, int64_t stride_mm, bf16* a, cudaStream_t stream);
void ns_mirror(int count, int m, int64_t stride_mm, f16* a, cudaStream_t stream);
void ns_mirror(int count, int m, int64_t stride_mm, float* a, cudaStream_t stream);

}  // namespace pg::kernels
