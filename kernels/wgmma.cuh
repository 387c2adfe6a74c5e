// Hopper warpgroup MMA (wgmma, sm_90a) building blocks, device code only: one warpgroup (4 warps,
// 128 threads) multiplies a 64-row A by a 64-column B, k = 16 per instruction, bf16 in, fp32
// accumulators, asynchronously (fence, issue, commit, wait).
//
// Shared-memory operands are tiles of 128-byte rows (64 bf16) in the 128-byte swizzle, the layout
// tiles::load_tile<ROWS, 64, NT> writes (16-byte chunk j of row r at chunk j ^ (r % 8)), with
// each tile 1024-byte aligned. A descriptor packs start >> 4 (bits 0-13), the leading byte
// offset >> 4 (16-29), the stride byte offset >> 4 (32-45) and the swizzle mode (62-63, 1 = 128 B):
//   K-major operand (rows = m or n, k contiguous: q, k for S = q·kᵀ): stride = 1024 (8 rows of
//     128 B); the leading offset is unused; k step kk starts 32 bytes further (16 bf16).
//   MN-major operand (rows = k, n contiguous: v for o = P·v, with the transpose flag): stride =
//     1024 (8 k rows), leading offset = the distance between 64-column panels along n; k step
//     kk starts 16 rows (2048 bytes) further.
// Accumulators of m64n64, d[8][4] (per warp w its rows 16w..16w+15, g = lane/4, c = lane%4): for
// each n8 chunk j, d[j][0], d[j][1] = row 16w+g, columns 8j+2c, +1; d[j][2], d[j][3] = row
// 16w+g+8: the mma.sync m16n8 C layout chunk after chunk, so the accumulators of S round to the
// register A operand of the next product exactly as with mma.sync (tiles::acc_to_a).
// Checked on an H200 against a host reference (bench/wgmma_probe.cu: every operand form here).
#pragma once
#include <cstdint>

namespace pg::kernels::wg {

__device__ __forceinline__ uint64_t smem_desc(const void* tile, uint32_t lead_bytes, uint32_t stride_bytes) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(tile));
  return uint64_t((a >> 4) & 0x3fff) | (uint64_t((lead_bytes >> 4) & 0x3fff) << 16) |
         (uint64_t((stride_bytes >> 4) & 0x3fff) << 32) | (uint64_t(1) << 62);
}

// The block's warpgroup (threadIdx.x / 128), read through a shuffle from lane 0 so that the
// compiler knows it is the same in every lane of a warp: a branch on it around wgmma
// instructions is then uniform; otherwise ptxas serialises every wgmma of the kernel (waits
// after each one, "C7520 ... in divergent path").
__device__ __forceinline__ int warpgroup_index() { return __shfl_sync(0xffffffffu, int(threadIdx.x) >> 7, 0); }

// The dynamic shared memory as a 1024-byte aligned S (the alignment descriptors of the 128-byte
// swizzle need; launches ask for 1 KB of slack). Offsetting the __shared__ array itself keeps
// the pointer in the shared window, so that accesses through it compile to shared loads and
// stores rather than generic ones.
template <class S>
__device__ __forceinline__ S& aligned_smem(unsigned char* raw) {
  const uint32_t pad = (1024u - (static_cast<uint32_t>(__cvta_generic_to_shared(raw)) & 1023u)) & 1023u;
  return *reinterpret_cast<S*>(raw + pad);
}

// Orders the generic-proxy shared-memory writes before (cp.async included, once waited for)
// ahead of the wgmma reads that follow a barrier.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Pins the accumulators at this point of the instruction order: the compiler sees an MMA's
// results as written when it is issued, so without this it may move their reads (or the writes
// of new values) above the wait that makes them valid. Call right after wait().
template <int N>
__device__ __forceinline__ void fence_acc(float (&d)[N][4]) {
#pragma unroll
  for (int j = 0; j < N; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[j][e])::"memory");
}

// d (+)= A·B, m64n64k16, A and B from shared memory (descriptors); TNSP_B = 1 for an MN-major B,
// TNSP_A = 1 for an MN-major A (stored [k][m], m contiguous; the descriptor as for an MN-major B).
// accumulate = 0 overwrites d.
template <int TNSP_B, int TNSP_A = 0>
__device__ __forceinline__ void mma_ss(float (&d)[8][4], uint64_t a, uint64_t b, int accumulate) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, %36, %35;\n}\n"
               : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
               : "l"(a), "l"(b), "r"(accumulate), "n"(TNSP_B), "n"(TNSP_A));
}

// d (+)= A·B, m64n128k16, A and B from shared memory: d[16][4] in the layout above (n8 chunks
// 0..15). A K-major B spans 16 groups of 8 rows (stride 1024); an MN-major B two 64-column panels
// (the leading offset between them).
template <int TNSP_B>
__device__ __forceinline__ void mma_ss_n128(float (&d)[16][4], uint64_t a, uint64_t b, int accumulate) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, %67;\n}\n"
               : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]), "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
               : "l"(a), "l"(b), "r"(accumulate), "n"(TNSP_B));
}

// d (+)= A·B, m64n64k16, A from registers (this warp's 16 rows as mma.sync A fragments), B from
// shared memory; OFF as for mma_ss.
template <int TNSP_B, int OFF = 0, int N = 8>
__device__ __forceinline__ void mma_rs(float (&d)[N][4], const uint32_t (&a)[4], uint64_t b, int accumulate) {
  static_assert(OFF + 8 <= N, "the accumulator chunks");
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"
               : "+f"(d[OFF + 0][0]), "+f"(d[OFF + 0][1]), "+f"(d[OFF + 0][2]), "+f"(d[OFF + 0][3]), "+f"(d[OFF + 1][0]), "+f"(d[OFF + 1][1]), "+f"(d[OFF + 1][2]), "+f"(d[OFF + 1][3]), "+f"(d[OFF + 2][0]), "+f"(d[OFF + 2][1]), "+f"(d[OFF + 2][2]), "+f"(d[OFF + 2][3]), "+f"(d[OFF + 3][0]), "+f"(d[OFF + 3][1]), "+f"(d[OFF + 3][2]), "+f"(d[OFF + 3][3]), "+f"(d[OFF + 4][0]), "+f"(d[OFF + 4][1]), "+f"(d[OFF + 4][2]), "+f"(d[OFF + 4][3]), "+f"(d[OFF + 5][0]), "+f"(d[OFF + 5][1]), "+f"(d[OFF + 5][2]), "+f"(d[OFF + 5][3]), "+f"(d[OFF + 6][0]), "+f"(d[OFF + 6][1]), "+f"(d[OFF + 6][2]), "+f"(d[OFF + 6][3]), "+f"(d[OFF + 7][0]), "+f"(d[OFF + 7][1]), "+f"(d[OFF + 7][2]), "+f"(d[OFF + 7][3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate), "n"(TNSP_B));
}

}  // namespace pg::kernels::wg
