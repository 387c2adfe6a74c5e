// Hopper tensor-memory-accelerator (TMA) building blocks, sm_90a: tiled bulk copies from global to
// shared memory described by a CUtensorMap, completed on an mbarrier, and back (bulk groups).
//
// A copy lands in the layout of the map's swizzle; with CU_TENSOR_MAP_SWIZZLE_128B and a box 64
// bf16 wide, a [rows][64] tile comes out as tiles::load_tile<ROWS, 64, NT> writes it (16-byte chunk
// j of row r at chunk j ^ (r % 8)), so kernels/wgmma.cuh's descriptors read it as they read
// cp.async tiles; the destination must be 1024-byte aligned. Elements outside the tensor are
// zero-filled (and counted in the bytes the barrier expects). A map over [batches][rows][cols]
// keeps each batch's rows apart: a box that runs past a sequence's last row reads zeros, not the
// next sequence.
// Checked on an H200 against the swizzled layout by bench/tma_probe.cu.
#pragma once
#include <cuda.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace pg::kernels::tma {

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// An mbarrier in shared memory expecting `count` arrivals a phase.
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count) : "memory");
}
// Makes initialised barriers visible to the async proxy (the TMA unit) before first use.
__device__ __forceinline__ void fence_mbar_init() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
// One arrival that also announces `bytes` of copies completing on this phase.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes) : "memory");
}
// A plain arrival (a consumer releasing a stage).
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(bar)) : "memory");
}
// Waits until the phase of parity `phase` has completed.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t phase) {
  asm volatile(
      "{\n.reg .pred p;\nTMA_WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      "@!p bra TMA_WAIT_%=;\n}\n" ::"r"(smem_u32(bar)),
      "r"(phase)
      : "memory");
}

// The box of `map` at element coordinates (c0 innermost: column; c1: row; c2: batch) into dst,
// completing on bar. One thread issues it.
__device__ __forceinline__ void load_3d(void* dst, const CUtensorMap* map, int c0, int c1, int c2, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], "
      "[%5];\n" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(smem_u32(bar))
      : "memory");
}

// load_3d into the same shared-memory offset of every CTA of the cluster in cta_mask (bit r: the
// CTA of rank r), each completing its copy on its own barrier at bar's offset. The receivers'
// barriers may see the bytes before their own expect_tx; a phase completes only once its
// arrivals are in too.
__device__ __forceinline__ void load_3d_multicast(void* dst, const CUtensorMap* map, int c0, int c1, int c2,
                                                  uint64_t* bar, uint16_t cta_mask) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster [%0], [%1, "
      "{%2, %3, %4}], [%5], %6;\n" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(smem_u32(bar)), "h"(cta_mask)
      : "memory");
}
// This CTA's rank in its cluster.
__device__ __forceinline__ uint32_t cluster_rank() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
  return r;
}
// An arrival on the barrier at bar's offset in the cluster's CTA of rank cta, with the default
// (CTA-scope) release: it orders nothing of the generic proxy across the cluster, so a consumer
// may signal with it only that its asynchronous reads (wgmma) of a buffer are done. The cluster
// scope (.release.cluster) compiles to a MEMBAR.ALL.GPU before the arrival, which waited on the
// thread's outstanding stores and cost the clusters-of-two GELU GEMM half its speed.
__device__ __forceinline__ void mbar_arrive_remote(uint64_t* bar, uint32_t cta) {
  asm volatile(
      "{\n.reg .b32 remote;\nmapa.shared::cluster.u32 remote, %0, %1;\n"
      "mbarrier.arrive.shared::cluster.b64 _, [remote];\n}\n" ::"r"(smem_u32(bar)),
      "r"(cta)
      : "memory");
}
// Every thread of the cluster: arrive, then wait for all (the non-aligned form: threads of a warp
// may reach it apart).
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release;\nbarrier.cluster.wait.acquire;\n" ::: "memory");
}

// The box of `map` at (c0, c1, c2) from src (shared memory, 1024-byte aligned, in the map's
// swizzle); rows and columns outside the tensor are not written. One thread issues it, then
// store_commit(), and store_wait_read() before src is reused or the block exits. Shared-memory
// writes of other threads reach it through fence.proxy.async and a barrier.
__device__ __forceinline__ void store_3d(const CUtensorMap* map, int c0, int c1, int c2, const void* src) {
  asm volatile("cp.async.bulk.tensor.3d.global.shared::cta.bulk_group [%0, {%2, %3, %4}], [%1];\n" ::"l"(
                   reinterpret_cast<uint64_t>(map)),
               "r"(smem_u32(src)), "r"(c0), "r"(c1), "r"(c2)
               : "memory");
}
__device__ __forceinline__ void store_commit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void store_wait_read() { asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory"); }

// A map of a bf16 [batches][rows][cols] tensor (rows row_stride elements apart, batches
// batch_stride apart; both multiples of 8) in boxes of box_cols × box_rows × 1, swizzled in 128-byte
// rows (box_cols · 2 <= 128). Pass it to a kernel as a `const __grid_constant__ CUtensorMap`.
inline CUtensorMap make_bf16_map_3d(const void* base, uint64_t cols, uint64_t rows, uint64_t batches,
                                    uint64_t row_stride, uint64_t batch_stride, uint32_t box_cols,
                                    uint32_t box_rows) {
  static PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess || fn == nullptr)
      throw std::runtime_error("tma: the driver has no cuTensorMapEncodeTiled");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  CUtensorMap map{};
  const cuuint64_t dims[3] = {cols, rows, batches};
  const cuuint64_t strides[2] = {row_stride * sizeof(uint16_t), batch_stride * sizeof(uint16_t)};  // bytes
  const cuuint32_t box[3] = {box_cols, box_rows, 1};
  const cuuint32_t elem_strides[3] = {1, 1, 1};
  const CUresult r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<void*>(base), dims, strides, box,
                            elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    throw std::runtime_error("tma: cuTensorMapEncodeTiled failed with " + std::to_string(int(r)));
  return map;
}

}  // namespace pg::kernels::tma
