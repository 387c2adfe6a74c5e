// Probe of Hopper warpgroup MMA (wgmma) operand layouts for the attention kernels: one warpgroup
// computes D[64][64] = A[64][K] · B[K][64] (K = 64, bf16 in, fp32 out) three ways and compares
// with a host reference:
//   mode 0: A and B from shared memory, B K-major (stored [n][k], as k is for S = q·kᵀ)
//   mode 1: A from shared memory, B MN-major (stored [k][n], as v is for o = P·v; transposed
//           through the instruction's tnsp-b flag)
//   mode 2: A from registers (mma.sync-style fragments, as P is), B MN-major
// Shared tiles are rows of 128 bytes (64 bf16) in the 128-byte swizzle: 16-byte chunk j of row r
// at chunk j ^ (r % 8); tiles 1024-byte aligned. Descriptors: start >> 4 (bits 0-13), leading
// byte offset >> 4 (16-29), stride byte offset >> 4 (32-45), swizzle mode 1 = 128 B (62-63).
//   build: nvcc -gencode arch=compute_90a,code=sm_90a -O2 -o wgmma_probe wgmma_probe.cu
#include <cuda_bf16.h>
#include <cstdint>
#include <cstdio>
#include <cmath>
#include <vector>
#include <random>

using bf16 = __nv_bfloat16;
constexpr int M = 64, N = 64, K = 64;

__device__ __forceinline__ int swz128(int r, int col) {  // element offset, col multiple of 8 ok
  return r * 64 + ((((col >> 3) ^ (r & 7)) << 3) | (col & 7));
}

__device__ __forceinline__ uint64_t desc(const void* p, uint32_t lbo, uint32_t sbo) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  return uint64_t((a >> 4) & 0x3fff) | (uint64_t((lbo >> 4) & 0x3fff) << 16) |
         (uint64_t((sbo >> 4) & 0x3fff) << 32) | (uint64_t(1) << 62);
}

template <int TNSP_B>
__device__ __forceinline__ void wgmma_ss(float (&d)[32], uint64_t da, uint64_t db, int scale_d) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, %32, %33, p, 1, 1, 0, %35;\n}\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
               : "l"(da), "l"(db), "r"(scale_d), "n"(TNSP_B));
}

template <int TNSP_B>
__device__ __forceinline__ void wgmma_rs(float (&d)[32], const uint32_t (&a)[4], uint64_t db, int scale_d) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %38, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, {%32, %33, %34, %35}, %36, p, 1, 1, %37;\n}\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "n"(TNSP_B), "r"(scale_d));
}

__global__ void probe(float* out, const bf16* A, const bf16* Bt, const bf16* Bkn, int mode) {
  __shared__ __align__(1024) bf16 sa[M * K];
  __shared__ __align__(1024) bf16 sb[K * N];
  const int t = threadIdx.x;
  for (int i = t; i < M * K; i += 128) sa[swz128(i / K, i % K)] = A[i];
  if (mode == 0)
    for (int i = t; i < N * K; i += 128) sb[swz128(i / K, i % K)] = Bt[i];  // [n][k]
  else
    for (int i = t; i < K * N; i += 128) sb[swz128(i / N, i % N)] = Bkn[i];  // [k][n]
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  __syncthreads();
  const int warp = t >> 5, lane = t & 31, g = lane >> 2, c = lane & 3;
  float d[32];
  for (int i = 0; i < 32; ++i) d[i] = 0.f;
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
  for (int kk = 0; kk < K / 16; ++kk) {
    // K-major: the k step moves 32 bytes along the swizzled row; SBO = 8 rows x 128 B.
    const uint64_t da = desc(sa + kk * 16, 16, 1024);
    if (mode == 0) {
      wgmma_ss<0>(d, da, desc(sb + kk * 16, 16, 1024), 1);
    } else {
      // MN-major: the k step moves 16 rows; SBO = the stride of 8-row groups along k (1024 B);
      // LBO would be the stride between 64-column panels along n (one panel here).
      const uint64_t db = desc(sb + kk * 16 * N, 8192, 1024);
      if (mode == 1) {
        wgmma_ss<1>(d, da, db, 1);
      } else {
        const int r0 = warp * 16 + g, k0 = kk * 16 + 2 * c;
        auto pk = [&](int r, int k) {
          __nv_bfloat162 v;
          v.x = A[r * K + k], v.y = A[r * K + k + 1];
          return *reinterpret_cast<uint32_t*>(&v);
        };
        const uint32_t a[4] = {pk(r0, k0), pk(r0 + 8, k0), pk(r0, k0 + 8), pk(r0 + 8, k0 + 8)};
        wgmma_rs<1>(d, a, db, 1);
      }
    }
  }
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  // Accumulators: per n8 chunk j, d[4j], d[4j+1] = row 16w+g, cols 8j+2c, +1; d[4j+2..3] row +8.
  for (int j = 0; j < N / 8; ++j)
    for (int e = 0; e < 4; ++e) {
      const int row = warp * 16 + g + (e >> 1) * 8, col = 8 * j + 2 * c + (e & 1);
      out[row * N + col] = d[4 * j + e];
    }
}

int main() {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<bf16> A(M * K), Bt(N * K), Bkn(K * N);
  std::vector<double> ref(M * N, 0.0);
  for (auto& x : A) x = __float2bfloat16(u(rng));
  for (int k = 0; k < K; ++k)
    for (int n = 0; n < N; ++n) {
      const bf16 v = __float2bfloat16(u(rng));
      Bkn[k * N + n] = v, Bt[n * K + k] = v;
    }
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n)
      for (int k = 0; k < K; ++k)
        ref[m * N + n] += double(__bfloat162float(A[m * K + k])) * double(__bfloat162float(Bkn[k * N + n]));
  bf16 *dA, *dBt, *dBkn;
  float* dout;
  cudaMalloc(&dA, A.size() * 2), cudaMalloc(&dBt, Bt.size() * 2), cudaMalloc(&dBkn, Bkn.size() * 2);
  cudaMalloc(&dout, M * N * 4);
  cudaMemcpy(dA, A.data(), A.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(dBt, Bt.data(), Bt.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(dBkn, Bkn.data(), Bkn.size() * 2, cudaMemcpyHostToDevice);
  int fails = 0;
  for (int mode = 0; mode < 3; ++mode) {
    cudaMemset(dout, 0, M * N * 4);
    probe<<<1, 128>>>(dout, dA, dBt, dBkn, mode);
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
