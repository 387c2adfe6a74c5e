// Probe of the TMA tile copies (kernels/tma.cuh) the attention kernels would load q, k, v and
// dout with: a bf16 [B][T][cols] tensor laid out like the model's fused q/k/v rows (cols = 3·NH·64),
// boxes of 64 columns × 128 rows at chosen (column, row, batch) coordinates, copied into shared
// memory by one thread and waited for on an mbarrier; every element is compared with the
// tensor at the place tiles::load_tile's 128-byte swizzle puts it, and rows past T must be zero.
// Random inputs (never zeros), exact comparison (a copy). Prints one line per box and PASS or
// FAIL; exits non-zero on a mismatch.
//   build (from the repository root):
//     nvcc -gencode arch=compute_90a,code=sm_90a -O2 -I. -o tma_probe bench/tma_probe.cu
#include <cuda_bf16.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/attention_tiles.cuh"
#include "kernels/tma.cuh"

namespace {

namespace tma = pg::kernels::tma;
using bf16 = __nv_bfloat16;
constexpr int kBoxCols = 64, kBoxRows = 128;

__global__ void probe_kernel(const __grid_constant__ CUtensorMap map, int c0, int c1, int c2, bf16* out) {
  __shared__ alignas(1024) bf16 tile[kBoxRows * kBoxCols];
  __shared__ alignas(8) uint64_t bar;
  if (threadIdx.x == 0) {
    tma::mbar_init(&bar, 1);
    tma::fence_mbar_init();
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    tma::mbar_arrive_expect_tx(&bar, kBoxRows * kBoxCols * sizeof(bf16));
    tma::load_3d(tile, &map, c0, c1, c2, &bar);
  }
  tma::mbar_wait(&bar, 0);
  for (int i = threadIdx.x; i < kBoxRows * kBoxCols; i += blockDim.x) out[i] = tile[i];
}

bool check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) std::printf("%s: %s\n", what, cudaGetErrorString(e));
  return e == cudaSuccess;
}

}  // namespace

int main() {
  const int B = 2, T = 300, NH = 2, cols = 3 * NH * 64;
  std::vector<uint16_t> host(size_t(B) * T * cols);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-2.f, 2.f);
  for (auto& x : host) {
    float f = u(rng);
    if (f == 0.f) f = 0.5f;
    const bf16 b = __float2bfloat16(f);
    std::memcpy(&x, &b, 2);
  }
  void* dev = nullptr;
  bf16* out = nullptr;
  if (!check(cudaMalloc(&dev, host.size() * 2), "cudaMalloc") ||
      !check(cudaMalloc(&out, kBoxRows * kBoxCols * 2), "cudaMalloc") ||
      !check(cudaMemcpy(dev, host.data(), host.size() * 2, cudaMemcpyHostToDevice), "cudaMemcpy"))
    return 1;
  const CUtensorMap map = tma::make_bf16_map_3d(dev, cols, T, B, cols, uint64_t(T) * cols, kBoxCols, kBoxRows);
  // (column, row, batch): the first box; k of head 1 in batch 1; a box running 84 rows past T;
  // v of head 1 from an unaligned row.
  const int boxes[][3] = {{0, 0, 0}, {NH * 64 + 64, 128, 1}, {64, 256, 1}, {2 * NH * 64 + 64, 172, 0}};
  int failed = 0;
  std::vector<uint16_t> got(kBoxRows * kBoxCols);
  for (const auto& bx : boxes) {
    probe_kernel<<<1, 128>>>(map, bx[0], bx[1], bx[2], out);
    if (!check(cudaGetLastError(), "launch") || !check(cudaDeviceSynchronize(), "kernel") ||
        !check(cudaMemcpy(got.data(), out, got.size() * 2, cudaMemcpyDeviceToHost), "cudaMemcpy"))
      return 1;
    int bad = 0;
    for (int r = 0; r < kBoxRows; ++r)
      for (int c = 0; c < kBoxCols; ++c) {
        const int row = bx[1] + r;
        const uint16_t want = row < T ? host[(size_t(bx[2]) * T + row) * cols + bx[0] + c] : 0;
        const uint16_t have = got[size_t(pg::kernels::tiles::swz<64>(r, c & ~7) + (c & 7))];
        bad += want != have;
      }
    std::printf("box col %d row %d batch %d: %d of %d elements differ\n", bx[0], bx[1], bx[2], bad,
                kBoxRows * kBoxCols);
    failed += bad != 0;
  }
  std::printf(failed ? "FAIL\n" : "PASS\n");
  return failed ? 1 : 0;
}
