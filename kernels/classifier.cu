// The fused classifier: soft cap, softmax, cross-entropy and dlogits (classifier.cuh).
#include "backend/cuda/check.hpp"
#include "core/error.hpp"
#include "kernels/classifier.cuh"
#include "kernels/common.cuh"

namespace pg::kernels {
namespace {

constexpr int kBlock = 1024;

__device__ __forceinline__ float capped(float l, float cap) { return cap > 0.f ? cap * tanhf(l / cap) : l; }

// Calls f(v, l_v) for every v < V of this thread's share of the row, in increasing v, 8 at a
// time when `vec`.
template <typename F>
__device__ __forceinline__ void for_row(const bf16* row, int V, bool vec, F&& f) {
  if (vec) {
    const int n_pack = V / 8;
    for (int p = threadIdx.x; p < n_pack; p += blockDim.x) {
      const int4 pv = reinterpret_cast<const int4*>(row)[p];
      const bf16* e = reinterpret_cast<const bf16*>(&pv);
#pragma unroll
      for (int j = 0; j < 8; ++j) f(p * 8 + j, to_f32(e[j]));
    }
    for (int v = n_pack * 8 + threadIdx.x; v < V; v += blockDim.x) f(v, to_f32(row[v]));
  } else {
    for (int v = threadIdx.x; v < V; v += blockDim.x) f(v, to_f32(row[v]));
  }
}

// The (value, index) pair that wins an argmax: the larger value, the lower index on ties.
__device__ __forceinline__ void argmax_merge(float& val, int& idx, float v2, int i2) {
  if (v2 > val || (v2 == val && i2 < idx)) val = v2, idx = i2;
}

// Index of the block's largest value (lowest index on ties); valid in thread 0.
__device__ int block_argmax(float val, int idx, float* vals, int* idxs) {
  for (int o = 16; o > 0; o >>= 1)
    argmax_merge(val, idx, __shfl_xor_sync(0xffffffffu, val, o), __shfl_xor_sync(0xffffffffu, idx, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) vals[warp] = val, idxs[warp] = idx;
  __syncthreads();
  if (threadIdx.x == 0)
    for (int w = 1; w < int(blockDim.x >> 5); ++w) argmax_merge(val, idx, vals[w], idxs[w]);
  return idx;
}

__global__ void __launch_bounds__(kBlock) fused_classifier_kernel(bf16* logits, float* losses, int32_t* correct,
                                                                  const int32_t* targets, int V, int V_padded,
                                                                  float dloss, float cap, bool write_dlogits,
                                                                  bool vec) {
  __shared__ float scratch[32];
  __shared__ int scratch_idx[32];
  const int64_t n = blockIdx.x;
  bf16* row = logits + n * V_padded;
  const int target = targets[n];
  // Pass 1: online max and sum of exp per thread, then across the block.
  // The argmax runs on the raw logits: the cap is strictly increasing, so it picks the same row.
  float m = -INFINITY, s = 0.f, best = -INFINITY;
  int best_idx = V;
  for_row(row, V, vec, [&](int v, float l) {
    if (l > best) best = l, best_idx = v;  // increasing v: the first maximum stays
    const float z = capped(l, cap);
    if (z > m) {
      s = s * __expf(m - z) + 1.f;
      m = z;
    } else {
      s += __expf(z - m);
    }
  });
  const float row_max = block_max(m, scratch);
  const float denom = block_sum(m == -INFINITY ? 0.f : s * __expf(m - row_max), scratch);
  const float z_target = capped(to_f32(row[target]), cap);  // read before pass 2 overwrites it
  if (threadIdx.x == 0) losses[n] = row_max + logf(denom) - z_target;
  if (correct) {
    const int argmax = block_argmax(best, best_idx, scratch, scratch_idx);
    if (threadIdx.x == 0) correct[n] = argmax == target ? 1 : 0;
  }
  if (!write_dlogits) return;
  __syncthreads();  // every thread has read row[target] before anyone writes it
  // Pass 2: the gradient, probabilities recomputed. Threads write only what they read.
  const float inv = 1.f / denom;
  auto grad = [&](int v, float z) {
    float d = dloss * (__expf(z - row_max) * inv - (v == target ? 1.f : 0.f));
    if (cap > 0.f) d *= 1.f - (z / cap) * (z / cap);
    return d;
  };
  if (vec) {
    const int n_pack = V / 8;
    for (int p = threadIdx.x; p < n_pack; p += blockDim.x) {
      int4 pv = reinterpret_cast<const int4*>(row)[p];
      bf16* e = reinterpret_cast<bf16*>(&pv);
#pragma unroll
      for (int j = 0; j < 8; ++j) e[j] = from_f32<bf16>(grad(p * 8 + j, capped(to_f32(e[j]), cap)));
      reinterpret_cast<int4*>(row)[p] = pv;
    }
    for (int v = n_pack * 8 + threadIdx.x; v < V; v += blockDim.x)
      row[v] = from_f32<bf16>(grad(v, capped(to_f32(row[v]), cap)));
  } else {
    for (int v = threadIdx.x; v < V; v += blockDim.x) row[v] = from_f32<bf16>(grad(v, capped(to_f32(row[v]), cap)));
  }
  for (int v = V + threadIdx.x; v < V_padded; v += blockDim.x) row[v] = from_f32<bf16>(0.f);
}

// The row staged in shared memory (V_padded·2 bytes of dynamic shared memory, V_padded % 8 == 0,
// rows 16-byte aligned): one asynchronous copy from global memory, then every pass reads shared
// memory, and pass 3 writes the gradient to global memory: the logits cross DRAM once each way.
// Pass 1 the row's largest raw logit (the cap is increasing, so its capped value is the max of
// z) and, with `correct`, its first index; pass 2 the sum of exp(z - max); pass 3 the gradient.
// Thread t owns the 8-logit packs t, t + blockDim.x, ...: it reads back only what it copied, so
// only the loss's row[target] needs the block barrier between the copy and its read.
constexpr int kStagedBlock = 512;

__device__ __forceinline__ void copy_async16(void* smem, const void* gmem) {
  const unsigned dst = unsigned(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(gmem) : "memory");
}

__global__ void __launch_bounds__(kStagedBlock, 2)
    classifier_staged_kernel(bf16* logits, float* losses, int32_t* correct, const int32_t* targets, int V,
                             int V_padded, float dloss, float cap, bool write_dlogits) {
  extern __shared__ int4 srow[];  // [V_padded / 8] packs of 8 bf16
  __shared__ float scratch[32];
  __shared__ int scratch_idx[32];
  const int64_t n = blockIdx.x;
  int4* row = reinterpret_cast<int4*>(logits + n * V_padded);
  const int n_pack = V_padded / 8, n_full = V / 8;  // packs n_full.. hold padding (or part of it)
  for (int p = threadIdx.x; p < n_pack; p += blockDim.x) copy_async16(srow + p, row + p);
  asm volatile("cp.async.wait_all;\n" ::: "memory");
  const int target = targets[n];
  // Pass 1: the largest raw logit (and its first index, for `correct`).
  float best = -INFINITY;
  int best_idx = V;
  for (int p = threadIdx.x; p < n_pack; p += blockDim.x) {
    const int4 pv = srow[p];
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&pv);
    if (p < n_full && !correct) {
      const __nv_bfloat162 m2 = __hmax2(__hmax2(h[0], h[1]), __hmax2(h[2], h[3]));
      best = fmaxf(best, fmaxf(__low2float(m2), __high2float(m2)));
    } else {
      const bf16* e = reinterpret_cast<const bf16*>(&pv);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float l = to_f32(e[j]);
        if (p * 8 + j < V && l > best) best = l, best_idx = p * 8 + j;  // increasing v: the first maximum stays
      }
    }
  }
  const float l_max = block_max(best, scratch);  // its barriers also publish the copied row
  if (correct) {
    const int argmax = block_argmax(best, best_idx, scratch, scratch_idx);
    if (threadIdx.x == 0) correct[n] = argmax == target ? 1 : 0;
  }
  const float row_max = capped(l_max, cap);
  // Pass 2: the denominator, exp(z - max) = 2^(z·log2e - max·log2e).
  constexpr float kLog2e = 1.4426950408889634f;
  const float shift = row_max * kLog2e;
  float s = 0.f;
  for (int p = threadIdx.x; p < n_pack; p += blockDim.x) {
    const int4 pv = srow[p];
    const bf16* e = reinterpret_cast<const bf16*>(&pv);
    if (p < n_full) {
#pragma unroll
      for (int j = 0; j < 8; ++j) s += exp2f(fmaf(capped(to_f32(e[j]), cap), kLog2e, -shift));
    } else {
#pragma unroll
      for (int j = 0; j < 8; ++j)
        if (p * 8 + j < V) s += exp2f(fmaf(capped(to_f32(e[j]), cap), kLog2e, -shift));
    }
  }
  const float denom = block_sum(s, scratch);
  const float z_target = capped(to_f32(reinterpret_cast<const bf16*>(srow)[target]), cap);
  if (threadIdx.x == 0) losses[n] = row_max + logf(denom) - z_target;
  if (!write_dlogits) return;
  // Pass 3: the gradient, probabilities recomputed; the padding gets 0.
  const float scale = dloss / denom;
  for (int p = threadIdx.x; p < n_pack; p += blockDim.x) {
    int4 pv = srow[p];
    bf16* e = reinterpret_cast<bf16*>(&pv);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int v = p * 8 + j;
      const float z = capped(to_f32(e[j]), cap);
      float d = fmaf(exp2f(fmaf(z, kLog2e, -shift)), scale, v == target ? -dloss : 0.f);
      if (cap > 0.f) d *= 1.f - (z / cap) * (z / cap);
      e[j] = from_f32<bf16>(p < n_full || v < V ? d : 0.f);
    }
    row[p] = pv;
  }
}

// One block of kSumBlock threads: thread t sums rows t, t + kSumBlock, ... in fp64, then a tree
// over the threads in a fixed order: deterministic.
constexpr int kSumBlock = 512;
__global__ void __launch_bounds__(kSumBlock) loss_sums_kernel(double* sums, const float* losses,
                                                              const int32_t* correct, int N) {
  __shared__ double part[2][kSumBlock];
  double s = 0.0, c = 0.0;
  for (int n = threadIdx.x; n < N; n += kSumBlock) {
    s += double(losses[n]);
    if (correct) c += double(correct[n]);
  }
  part[0][threadIdx.x] = s, part[1][threadIdx.x] = c;
  for (int half = kSumBlock / 2; half > 0; half /= 2) {
    __syncthreads();
    if (threadIdx.x < half) {
      part[0][threadIdx.x] += part[0][threadIdx.x + half];
      part[1][threadIdx.x] += part[1][threadIdx.x + half];
    }
  }
  if (threadIdx.x == 0) sums[0] = part[0][0], sums[1] = part[1][0];
}

// The staged kernel's dynamic shared memory limit: the device's opt-in maximum per block, set on
// the kernel once.
size_t staged_smem_limit() {
  static const size_t limit = [] {
    int dev = 0, optin = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    const int usable = optin - 1024;  // the static scratch arrays
    CUDA_CHECK(cudaFuncSetAttribute(classifier_staged_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, usable));
    return size_t(usable);
  }();
  return limit;
}

}  // namespace

void fused_classifier(bf16* logits, float* losses, int32_t* correct, const int32_t* targets, int N, int V,
                      int V_padded, float dloss, float softcap, bool write_dlogits, cudaStream_t stream) {
  if (N <= 0) return;
  PG_CHECK(V > 0 && V <= V_padded, "fused_classifier: need 0 < V <= V_padded");
  const bool vec = V_padded % 8 == 0 && (reinterpret_cast<uintptr_t>(logits) & 15) == 0;
  const size_t staged_smem = size_t(V_padded) * sizeof(bf16);
  if (vec && staged_smem <= staged_smem_limit()) {
    classifier_staged_kernel<<<unsigned(N), kStagedBlock, staged_smem, stream>>>(logits, losses, correct, targets, V,
                                                                               V_padded, dloss, softcap, write_dlogits);
  } else {
    fused_classifier_kernel<<<unsigned(N), kBlock, 0, stream>>>(logits, losses, correct, targets, V, V_padded,
                                                                dloss, softcap, write_dlogits, vec);
  }
  CUDA_CHECK_LAUNCH();
}

void loss_sums(double* sums, const float* losses, const int32_t* correct, int N, cudaStream_t stream) {
  loss_sums_kernel<<<1, kSumBlock, 0, stream>>>(sums, losses, correct, N);
  CUDA_CHECK_LAUNCH();
}

}  // namespace pg::kernels
