// Newton-Schulz on the GPU, grouped and batched by shape: the device twin of NsGroups +
// newton_schulz_cpu (the math, the schedules and the rounding points are in newton_schulz.hpp).
//
// The matrices (shape i at base + offsets[i], row-major fp32) are grouped by wide shape
// (m = min(rows, cols), n = max): a tall matrix is transposed in and out, so NS iterates on the
// m x m Gram matrix. Per group, stacked [count, m, n] with a 16-byte aligned stride, one step of
// the schedule with coefficients (a, b, c) is three strided-batched cuBLASLt GEMMs for the
// whole group, each rounding its output once, as the CPU emulation does:
//   A = X X^T                      (m x m)
//   B = c A A + b A                (A is symmetric, so A A = A A^T; beta·A from a second input)
//   X <- B X + a X                 (into the other X buffer; the two swap each step)
// before that: X = T(D / (||D||_F · safety + eps)), ||D||_F per matrix in fp32 tiles summed in
// fp64. Precisions: bf16 (bf16 operands and outputs, fp32 accumulation), fp16 (the same in fp16;
// Muon passes safety 1.02, as on the CPU) and fp32 (fp32 operands on the CUDA cores, not TF32).
// Symmetric X X^T (symmetric = true, groups with m % 16 == 0): cuBLASLt has no batched syrk, so
// the m x m product is computed by h x h blocks (m = 2h): the two diagonal blocks in one
// strided-batched GEMM over 2·count blocks (X's halves are h x n apart; A is laid out with a
// member stride of m^2 + m so that the diagonal blocks are h·m + h apart too), the upper-right
// block in a second, and the lower-left copied from it (kernels::ns_mirror): 3/4 of the FLOPs of
// X X^T for two more launches. A·A (2m^3, the smaller product) stays one GEMM. Measured on an
// H200 (bench/muon_bench.cpp, bench/RESULTS.md): 2% slower at m <= 768 with 12-256 matrices per
// group, 2.6% faster only for 768 matrices of 768 x 1536, so it is off by default. Every element
// is still one fp32 dot product rounded once: both ways agree up to summation order.
//
// All buffers (the fp32 input, two X, A, B, norm partials) are allocated at construction; a
// step allocates nothing. `batched = false` issues the same GEMMs one matrix at a time (the
// benchmark's baseline for what batching buys); `symmetric` as above. Test: tests/gpu/test_cuda_muon.cpp.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "backend/cuda/device.hpp"
#include "backend/cuda/gemm.hpp"
#include "kernels/newton_schulz.cuh"
#include "optim/newton_schulz.hpp"
#include "optim/ns_groups.hpp"

namespace pg {

class CudaNewtonSchulz {
 public:
  struct Group {
    int m = 0, n = 0;                        // wide shape, m <= n
    std::vector<int> members;                // indices into the shapes given at construction
    std::vector<uint8_t> flags;              // per member: kernels::kNsTall when stored n x m
    int64_t stride = 0, stride_mm = 0;       // elements between members: [m, n] and [m, m] buffers
    bool split = false;                      // X X^T by blocks (symmetric mode, m % 16 == 0)
    cuda::DeviceBuffer<int64_t> offsets;     // [count] the members' offsets (given at construction)
    cuda::DeviceBuffer<uint8_t> flags_dev;   // [count]
    cuda::DeviceBuffer<float> in;            // [count, stride] fp32 input, wide orientation
    cuda::DeviceBuffer<float> partial;       // [count, ns_tiles(m, n)] sums of squares of `in`
    cuda::DeviceBuffer<float> scale;         // [count] 1 / (||in|| · safety + eps)
    cuda::DeviceBuffer<std::byte> x, y;      // [count, stride] of the precision's type
    cuda::DeviceBuffer<std::byte> a, b;      // [count, stride_mm]
    const void* result = nullptr;            // x or y: where the last orthogonalise() left NS(in)
    kernels::NsBatch batch() const { return {int(members.size()), m, n, stride}; }
  };

  // shapes[i] lives at base + offsets[i] for the base pointers given to run() (Muon: the flat
  // parameter buffer's offsets). schedule: ns_schedule(...); safety divides the input norm.
  CudaNewtonSchulz(std::span<const MatrixShape> shapes, std::span<const int64_t> offsets,
                   std::vector<NsCoeffs> schedule, NsPrecision precision, double safety, cudaStream_t stream,
                   bool batched = true, bool symmetric = kSymmetricDefault);
  static constexpr bool kSymmetricDefault = false;  // measured: blocks do not pay at m <= 768 (RESULTS.md)

  // In place: every matrix at base + offsets[i] <- NS(it), in fp32.
  void run(float* base);
  // The GEMM part on inputs already in every group's `in` and `partial` (Muon's momentum kernel
  // writes them): scale, cast, iterate; afterwards group.result holds NS(in), wide, of the
  // precision's type.
  void orthogonalise();

  std::vector<Group>& groups() { return groups_; }
  const std::vector<Group>& groups() const { return groups_; }
  NsPrecision precision() const { return precision_; }
  const std::vector<NsCoeffs>& schedule() const { return schedule_; }
  cudaStream_t stream() const { return stream_; }

 private:
  void iterate(Group& g);
  void step_gemms(Group& g, const NsCoeffs& k, std::byte* x, std::byte* y, int first, int count);
  void gram_by_blocks(Group& g, const std::byte* X, std::byte* A, int count);

  std::vector<NsCoeffs> schedule_;
  NsPrecision precision_;
  double safety_;
  cudaStream_t stream_;
  bool batched_, symmetric_;
  size_t elem_;  // bytes per element at this precision
  cuda::GemmRunner gemm_;
  std::vector<Group> groups_;
};

}  // namespace pg
