// Warp-level tensor-core building blocks of the attention kernels (device code only): bf16
// mma.sync m16n8k16 with fp32 accumulators, ldmatrix fragment loads from swizzled shared-memory
// tiles, and cp.async tile copies from global memory.
//
// Fragment layouts of mma.m16n8k16 (g = lane/4, c = lane%4), each register two adjacent bf16:
//   A 16×16 (row-major): a0 = A[g][2c..2c+1], a1 = A[g+8][2c..], a2 = A[g][2c+8..],
//                        a3 = A[g+8][2c+8..]
//   B 16×8  (k × n):     b0 = B[2c..2c+1][g],  b1 = B[2c+8..2c+9][g]
//   C 16×8  (fp32):      c0,c1 = C[g][2c, 2c+1], c2,c3 = C[g+8][2c, 2c+1]
// So the fp32 accumulators of two adjacent 16×8 C tiles, rounded to bf16, are exactly the A
// fragment of the next product (how P = softmax(S) feeds P·V without touching shared memory).
//
// Shared-memory tiles are [rows][W] bf16 (W = 32, 64 or 128 columns) stored in 16-byte chunks;
// chunk j of row r sits at chunk position j ^ swizzle(r), so that the 8 row addresses of one
// ldmatrix phase (8 consecutive rows, one chunk column) fall in 8 distinct bank groups.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

namespace pg::kernels::tiles {

// Element offset of (row r, column col) in a swizzled [rows][W] tile; col is a multiple of 8.
template <int W>
__host__ __device__ __forceinline__ int swz(int r, int col) {
  static_assert(W == 32 || W == 64 || W == 128, "tile width");
  // 64-byte rows (W = 32) put two rows in one 128-byte bank line, so the row pair is the unit.
  const int x = W == 32 ? (r >> 1) & 3 : r & 7;
  return r * W + (((col >> 3) ^ x) << 3);
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronously; zero-filled when !valid (then src is not read).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(n));
}
// 4 bytes global -> shared, asynchronously (through L1); zero-filled when !valid.
__device__ __forceinline__ void cp_async4(void* dst, const void* src, bool valid) {
  const int n = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Copies rows [0, ROWS) of a global [rows][W] bf16 tile whose rows are `stride` elements apart
// into the swizzled shared tile; rows >= n_valid are zero-filled. All NT threads take part.
template <int ROWS, int W, int NT>
__device__ __forceinline__ void load_tile(__nv_bfloat16* smem, const __nv_bfloat16* gmem,
                                          int64_t stride, int n_valid) {
  constexpr int kChunks = W / 8;
  static_assert((ROWS * kChunks) % NT == 0, "tile chunks per thread");
#pragma unroll
  for (int i = 0; i < ROWS * kChunks / NT; ++i) {
    const int idx = i * NT + int(threadIdx.x);
    const int r = idx / kChunks, col = (idx % kChunks) * 8;
    const bool valid = r < n_valid;
    cp_async16(smem + swz<W>(r, col), gmem + (valid ? r * stride + col : 0), valid);
  }
}

__device__ __forceinline__ void ldsm_x4(uint32_t (&d)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&d)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
               : "r"(smem_addr(p)));
}

// A fragment of the 16×16 block at (r0, c0) of a row-major [rows][W] tile (rows are m, columns k).
template <int W>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const __nv_bfloat16* t, int r0, int c0) {
  const int lane = threadIdx.x & 31;
  ldsm_x4(a, t + swz<W>(r0 + (lane & 15), c0 + (lane >> 4) * 8));
}
// A fragment of the 16×16 block of Aᵀ where the tile stores A transposed: tile[k][m], the block's
// k rows starting at k0 and its m columns at m0.
template <int W>
__device__ __forceinline__ void load_a_t(uint32_t (&a)[4], const __nv_bfloat16* t, int k0, int m0) {
  const int lane = threadIdx.x & 31;
  ldsm_x4_t(a, t + swz<W>(k0 + (lane & 7) + (lane >> 4) * 8, m0 + ((lane >> 3) & 1) * 8));
}
// B fragments for two adjacent n-tiles, B[k][n] = tile[n][k] (tile rows are n, e.g. keys with
// k = head dim): b[0..1] for n in [n0, n0+8), b[2..3] for [n0+8, n0+16); k in [k0, k0+16).
template <int W>
__device__ __forceinline__ void load_b_nk(uint32_t (&b)[4], const __nv_bfloat16* t, int n0,
                                          int k0) {
  const int lane = threadIdx.x & 31;
  ldsm_x4(b, t + swz<W>(n0 + (lane & 7) + (lane >> 4) * 8, k0 + ((lane >> 3) & 1) * 8));
}
// B fragments for two adjacent n-tiles, B[k][n] = tile[k][n] (tile rows are k, e.g. values with
// n = head dim): b[0..1] for n in [n0, n0+8), b[2..3] for [n0+8, n0+16); k in [k0, k0+16).
template <int W>
__device__ __forceinline__ void load_b_kn(uint32_t (&b)[4], const __nv_bfloat16* t, int k0,
                                          int n0) {
  const int lane = threadIdx.x & 31;
  ldsm_x4_t(b, t + swz<W>(k0 + (lane & 7) + ((lane >> 3) & 1) * 8, n0 + (lane >> 4) * 8));
}

// d += a·b on the tensor cores (bf16 inputs, fp32 accumulators).
__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 2^x in one special-function instruction (exp2f adds range fix-ups for results below 2^-126,
// which a softmax rounds to 0 anyway). ex2(-inf) = 0.
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// The two n-tiles of a load_b_* fragment pair: d0 += a·b[0..1], d1 += a·b[2..3].
__device__ __forceinline__ void mma2(float (&d0)[4], float (&d1)[4], const uint32_t (&a)[4],
                                     const uint32_t (&b)[4]) {
  mma(d0, a, b[0], b[1]);
  mma(d1, a, b[2], b[3]);
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// The A fragment (16 rows × 16 k) made of the accumulators of n-tiles 2j and 2j+1.
__device__ __forceinline__ void acc_to_a(uint32_t (&a)[4], const float (&c0)[4],
                                         const float (&c1)[4]) {
  a[0] = pack_bf16(c0[0], c0[1]);
  a[1] = pack_bf16(c0[2], c0[3]);
  a[2] = pack_bf16(c1[0], c1[1]);
  a[3] = pack_bf16(c1[2], c1[3]);
}

}  // namespace pg::kernels::tiles
