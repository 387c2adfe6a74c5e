// Probe of Hopper warpgroup MMA (wgmma) operand layouts for the attention kernels: one warpgroup
// computes D[64][64] = A[64][K] · B[K][64] (K = 64, bf16 in, fp32 out) four ways and compares
// with a host reference:
//   mode 0: A and B from shared memory, B K-major (stored [n][k], as k is for S = q·kᵀ)
//   mode 1: A from shared memory, B MN-major (stored [k][n], as v is for o = P·v; transposed
//           through the instruction's tnsp-b flag)
//   mode 2: A from registers (mma.sync-style fragments, as P is), B MN-major
//   mode 3: A and B MN-major from shared memory (A stored [k][m], as dSᵀ is for dq = dS·k;
//           tnsp-a and tnsp-b flags)
// The layouts and instructions are kernels/wgmma.cuh's, the ones the attention kernels use.
//   build (from the repository root):
//     nvcc -gencode arch=compute_90a,code=sm_90a -O2 -I. -o wgmma_probe bench/wgmma_probe.cu
#include <cuda_bf16.h>
#include <cstdint>
#include <cstdio>
#include <cmath>
#include <vector>
#include <random>

#include "kernels/attention_tiles.cuh"
#include "kernels/wgmma.cuh"

namespace wg = pg::kernels::wg;

using bf16 = __nv_bfloat16;
constexpr int M = 64, N = 64, K = 64;

// Element (r, col) of a 64-column tile in load_tile's swizzled layout.
__device__ __forceinline__ int swz128(int r, int col) { return pg::kernels::tiles::swz<64>(r, col & ~7) + (col & 7); }

__global__ void probe(float* out, const bf16* A, const bf16* At, const bf16* Bt, const bf16* Bkn, int mode) {
  __shared__ __align__(1024) bf16 sa[M * K];
  __shared__ __align__(1024) bf16 sb[K * N];
  const int t = threadIdx.x;
  if (mode == 3)
    for (int i = t; i < K * M; i += 128) sa[swz128(i / M, i % M)] = At[i];  // [k][m]
  else
    for (int i = t; i < M * K; i += 128) sa[swz128(i / K, i % K)] = A[i];  // [m][k]
  if (mode == 0)
    for (int i = t; i < N * K; i += 128) sb[swz128(i / K, i % K)] = Bt[i];  // [n][k]
  else
    for (int i = t; i < K * N; i += 128) sb[swz128(i / N, i % N)] = Bkn[i];  // [k][n]
  wg::fence_proxy_async();
  __syncthreads();
  const int warp = t >> 5, lane = t & 31, g = lane >> 2, c = lane & 3;
  float d[8][4] = {};
  wg::fence();
  for (int kk = 0; kk < K / 16; ++kk) {
    // K-major: the k step moves 32 bytes along the swizzled row; SBO = 8 rows x 128 B.
    const uint64_t da = wg::smem_desc(sa + kk * 16, 16, 1024);
    if (mode == 0) {
      wg::mma_ss<0>(d, da, wg::smem_desc(sb + kk * 16, 16, 1024), 1);
    } else {
      // MN-major: the k step moves 16 rows; SBO = the stride of 8-row groups along k (1024 B);
      // LBO would be the stride between 64-column panels along n (one panel here).
      const uint64_t db = wg::smem_desc(sb + kk * 16 * N, 8192, 1024);
      if (mode == 1) {
        wg::mma_ss<1>(d, da, db, 1);
      } else if (mode == 3) {
        wg::mma_ss<1, 1>(d, wg::smem_desc(sa + kk * 16 * M, 8192, 1024), db, 1);
      } else {
        const int r0 = warp * 16 + g, k0 = kk * 16 + 2 * c;
        auto pk = [&](int r, int k) {
          __nv_bfloat162 v;
          v.x = A[r * K + k], v.y = A[r * K + k + 1];
          return *reinterpret_cast<uint32_t*>(&v);
        };
        const uint32_t a[4] = {pk(r0, k0), pk(r0 + 8, k0), pk(r0, k0 + 8), pk(r0 + 8, k0 + 8)};
        wg::mma_rs<1>(d, a, db, 1);
      }
    }
  }
  wg::commit();
  wg::wait<0>();
  // Accumulators: per n8 chunk j, d[j][0..1] = row 16w+g, cols 8j+2c, +1; d[j][2..3] row +8.
  for (int j = 0; j < N / 8; ++j)
    for (int e = 0; e < 4; ++e) {
      const int row = warp * 16 + g + (e >> 1) * 8, col = 8 * j + 2 * c + (e & 1);
      out[row * N + col] = d[j][e];
    }
}

int main() {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<bf16> A(M * K), At(K * M), Bt(N * K), Bkn(K * N);
  std::vector<double> ref(M * N, 0.0);
  for (int m = 0; m < M; ++m)
    for (int k = 0; k < K; ++k) A[m * K + k] = At[k * M + m] = __float2bfloat16(u(rng));
  for (int k = 0; k < K; ++k)
    for (int n = 0; n < N; ++n) {
      const bf16 v = __float2bfloat16(u(rng));
      Bkn[k * N + n] = v, Bt[n * K + k] = v;
    }
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n)
      for (int k = 0; k < K; ++k)
        ref[m * N + n] += double(__bfloat162float(A[m * K + k])) * double(__bfloat162float(Bkn[k * N + n]));
  bf16 *dA, *dAt, *dBt, *dBkn;
  float* dout;
  cudaMalloc(&dA, A.size() * 2), cudaMalloc(&dAt, At.size() * 2), cudaMalloc(&dBt, Bt.size() * 2), cudaMalloc(&dBkn, Bkn.size() * 2);
  cudaMalloc(&dout, M * N * 4);
  cudaMemcpy(dA, A.data(), A.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(dAt, At.data(), At.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(dBt, Bt.data(), Bt.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(dBkn, Bkn.data(), Bkn.size() * 2, cudaMemcpyHostToDevice);
  int fails = 0;
  for (int mode = 0; mode < 4; ++mode) {
    cudaMemset(dout, 0, M * N * 4);
    probe<<<1, 128>>>(dout, dA, dAt, dBt, dBkn, mode);
    const cudaError_t err = cudaDeviceSynchronize();
    std::vector<float> got(M * N);
    cudaMemcpy(got.data(), dout, M * N * 4, cudaMemcpyDeviceToHost);
    double num = 0, den = 0;
    for (int i = 0; i < M * N; ++i) num += (got[i] - ref[i]) * (got[i] - ref[i]), den += ref[i] * ref[i];
    const double rel = std::sqrt(num / den);
    std::printf("mode %d: %s rel err %.3g%s\n", mode, cudaGetErrorString(err), rel, rel < 1e-5 ? "" : "  FAIL");
    if (rel >= 1e-5 || err != cudaSuccess) {
      ++fails;
      std::printf("  got[0..3] %g %g %g %g ref %g %g %g %g\n", got[0], got[1], got[2], got[3], ref[0], ref[1], ref[2], ref[3]);
    }
  }
  return fails ? 1 : 0;
}
