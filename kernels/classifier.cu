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

}  // namespace

void fused_classifier(bf16* logits, float* losses, int32_t* correct, const int32_t* targets, int N, int V,
                      int V_padded, float dloss, float softcap, bool write_dlogits, cudaStream_t stream) {
  if (N <= 0) return;
  PG_CHECK(V > 0 && V <= V_padded, "fused_classifier: need 0 < V <= V_padded");
  const bool vec = V_padded % 8 == 0 && (reinterpret_cast<uintptr_t>(logits) & 15) == 0;
  fused_classifier_kernel<<<unsigned(N), kBlock, 0, stream>>>(logits, losses, correct, targets, V, V_padded,
                                                              dloss, softcap, write_dlogits, vec);
  CUDA_CHECK_LAUNCH();
}

}  // namespace pg::kernels
