// The fused classifier: soft cap, softmax, cross-entropy and dlogits (classifier.cuh).
#include <cooperative_groups.h>

#include "backend/cuda/check.hpp"
#include "core/error.hpp"
#include "kernels/attention_tiles.cuh"
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

// The split kernel: row n over a cluster of K CTAs (K = 1, 2, 4 or 8; clusters are the
// consecutive blocks K·n .. K·n + K - 1 of a 1-D grid of N·K blocks). CTA rank k copies packs
// [k·chunk, (k + 1)·chunk) of the row's V_padded / 8 packs of 8 bf16 into shared memory (chunk·16
// bytes of dynamic shared memory) with one asynchronous copy, then works from there:
//   pass 1: the chunk's largest raw logit (the cap is increasing, so its capped value m_k is the
//           max of z) and, with `correct`, its first index;
//   pass 2: e_v = 2^(z_v·log2e - shift_k) with shift_k = m_k·log2e - 15, so e_v <= 2^15; the sum
//           s_k = Σ e_v, and g_v = e_v·(1 - (z_v/cap)²) written over the chunk as fp16;
//   combine: every CTA reads the cluster's (shift_k, s_k, argmax) through distributed shared
//           memory: B = max shift_k, S = Σ s_k·2^(shift_k - B) = Σ_v 2^(z_v·log2e - B);
//   pass 3: dlogits_v = g_v·dloss·2^(shift_k - B)/S, written to global memory.
// One exp per logit, not two: pass 3 reads the fp16 g instead of recomputing it, at the cost of
// one fp16 rounding (2^-11, a fifth of the bf16 output's); the 2^15 keeps g in fp16's normal range
// down to softmax values of ~2^-29. The target's gradient, dloss·(p_t - 1)·..., would lose to that
// rounding when p_t -> 1, so its owner thread recomputes it in fp32 from the logit it kept.
// The automatic K is the smallest whose chunk fits in one CTA's shared memory: K = 1 (a cluster
// of one, two rows per SM) up to V_padded ~113K on an H100/H200; larger vocabularies split. More
// CTAs per SM did not pay on an H200 (kernels_bench, 8192 × 50304, no cap: K = 1 0.441 ms,
// 2 0.458, 4 0.481, 8 0.591; a device copy 0.391): presumably the cluster barriers cost more than
// the finer overlap gains once one exp per logit has cut the compute. Thread t owns the packs t,
// t + blockDim.x, ...: it reads back only what it copied, so the passes need no barrier besides
// the reductions'.
constexpr int kSplitThreads = 512;     // per cluster: blockDim.x = kSplitThreads / K
constexpr int kMaxSplit = 8;           // the portable cluster size limit
constexpr float kGScale = 15.f;  // log2 of the fp16 g's scale

__device__ __forceinline__ void copy_async16(void* smem, const void* gmem) {
  const unsigned dst = unsigned(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(gmem) : "memory");
}

// 2^x in one MUFU instruction: tiles::ex2 (ex2.approx: 2^-22 relative; results below 2^-126
// flush to 0).
using tiles::ex2;

// Pass 2 over one pack: its 8 raw logits in, its 8 fp16 g out (in place); returns Σ e. With
// `partial`, logits n_valid.. are padding: e = g = 0.
template <bool partial>
__device__ __forceinline__ float exp_pack(int4& pv, float shift, float cap, int n_valid) {
  const __nv_bfloat162* x = reinterpret_cast<const __nv_bfloat162*>(&pv);
  __half2 g[4];
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 l = __bfloat1622float2(x[i]);
    float z[2] = {l.x, l.y}, gi[2];
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      if (cap > 0.f) z[j] = capped(z[j], cap);
      float e = ex2(fmaf(z[j], kLog2e, -shift));
      gi[j] = cap > 0.f ? e * (1.f - (z[j] / cap) * (z[j] / cap)) : e;
      if (partial && 2 * i + j >= n_valid) e = gi[j] = 0.f;  // whatever the padding holds, even NaN
      s += e;
    }
    g[i] = __floats2half2_rn(gi[0], gi[1]);
  }
  pv = *reinterpret_cast<const int4*>(g);
  return s;
}

// What each CTA of a cluster publishes for the combine.
struct SplitPart {
  float shift, s;   // shift_k (-inf for a chunk of padding alone) and s_k
  float best;       // the chunk's largest raw logit
  int best_idx;     // its first index (V when `correct` is null or the chunk has no logit)
};

// kCap: whether cap > 0 (without it, cap = 0 is known to the compiler and the cap's code goes).
template <bool kCap>
__global__ void __launch_bounds__(kSplitThreads, 2)
    classifier_split_kernel(bf16* logits, float* losses, int32_t* correct, const int32_t* targets, int V,
                            int V_padded, int chunk, float dloss, float cap, bool write_dlogits) {
  if (!kCap) cap = 0.f;
  extern __shared__ int4 srow[];  // [chunk] packs of 8 bf16, then of 8 fp16 g
  __shared__ float scratch[32];
  __shared__ int scratch_idx[32];
  __shared__ SplitPart part;
  namespace cg = cooperative_groups;
  const cg::cluster_group cluster = cg::this_cluster();
  const int K = int(cluster.num_blocks()), rank = int(cluster.block_rank());
  const int64_t n = blockIdx.x / K;
  int4* row = reinterpret_cast<int4*>(logits + n * V_padded);
  const int n_pack = V_padded / 8, n_full = V / 8;  // packs n_full.. hold padding (or part of it)
  const int p0 = rank * chunk, n_mine = max(0, min(chunk, n_pack - p0));
  for (int q = threadIdx.x; q < n_mine; q += blockDim.x) copy_async16(srow + q, row + p0 + q);
  const int target = targets[n];
  asm volatile("cp.async.wait_all;\n" ::: "memory");
  // Pass 1.
  float best = -INFINITY;
  int best_idx = V;
  for (int q = threadIdx.x; q < n_mine; q += blockDim.x) {
    const int p = p0 + q;
    const int4 pv = srow[q];
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
  const float l_max = block_max(best, scratch);
  if (correct) best_idx = block_argmax(best, best_idx, scratch, scratch_idx);
  const float shift = l_max == -INFINITY ? -INFINITY : fmaf(capped(l_max, cap), kLog2e, -kGScale);
  // Pass 2; the owner of the target's pack keeps its capped logit.
  const int q_t = target / 8 - p0;
  bool owner = false;
  float z_t = 0.f, s = 0.f;
  for (int q = threadIdx.x; q < n_mine; q += blockDim.x) {
    const int p = p0 + q;
    int4 pv = srow[q];
    if (q == q_t) owner = true, z_t = capped(to_f32(reinterpret_cast<const bf16*>(&srow[q])[target & 7]), cap);
    s += p < n_full ? exp_pack<false>(pv, shift, cap, 8) : exp_pack<true>(pv, shift, cap, V - p * 8);
    if (write_dlogits) srow[q] = pv;
  }
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) part = SplitPart{shift, s, l_max, best_idx};
  cluster.sync();  // the parts are published cluster-wide
  // Combine, in rank order: the same B, S and argmax in every CTA.
  float B = -INFINITY, S = 0.f, best_all = -INFINITY;
  int arg = V;
  SplitPart parts[kMaxSplit];
#pragma unroll
  for (int r = 0; r < kMaxSplit; ++r)
    if (r < K) {
      parts[r] = *cluster.map_shared_rank(&part, r);
      B = fmaxf(B, parts[r].shift);
    }
#pragma unroll
  for (int r = 0; r < kMaxSplit; ++r)
    if (r < K) {
      if (parts[r].s > 0.f) S += parts[r].s * ex2(parts[r].shift - B);
      argmax_merge(best_all, arg, parts[r].best, parts[r].best_idx);
    }
  cluster.barrier_arrive();  // done reading the others' parts; they may exit
  if (correct && rank == 0 && threadIdx.x == 0) correct[n] = arg == target ? 1 : 0;
  if (owner) losses[n] = (B + log2f(S)) * kLn2 - z_t;
  if (write_dlogits) {
    // Pass 3.
    const float c = shift == -INFINITY ? 0.f : dloss * ex2(shift - B) / S;
    for (int q = threadIdx.x; q < n_mine; q += blockDim.x) {
      int4 pv = srow[q];
      const __half2* g = reinterpret_cast<const __half2*>(&pv);
      int4 out;
      __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(&out);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 gi = __half22float2(g[i]);
        o[i] = __floats2bfloat162_rn(gi.x * c, gi.y * c);
      }
      __stcs(row + p0 + q, out);  // streaming: the head's backward GEMMs read it much later
    }
    if (owner) {  // overwrites its own store above: program order keeps this one
      float d_t = dloss * (ex2(fmaf(z_t, kLog2e, -B)) / S - 1.f);
      if (cap > 0.f) d_t *= 1.f - (z_t / cap) * (z_t / cap);
      reinterpret_cast<bf16*>(row)[target] = from_f32<bf16>(d_t);
    }
  }
  cluster.barrier_wait();  // the others are done reading this CTA's part
}

// One block of kSumBlock threads: thread t sums rows t, t + kSumBlock, ... in fp64, then a tree
// over the threads in a fixed order: deterministic.
// The unrolled loop keeps 8 loads per thread in flight (the adds stay in order).
constexpr int kSumBlock = 1024;
__global__ void __launch_bounds__(kSumBlock) loss_sums_kernel(double* sums, const float* losses,
                                                              const int32_t* correct, int N) {
  __shared__ double part[2][kSumBlock];
  double s = 0.0, c = 0.0;
#pragma unroll 8
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

// The split kernel's dynamic shared memory limit: the device's opt-in maximum per block, set on
// the kernel once.
size_t split_smem_limit() {
  static const size_t limit = [] {
    int dev = 0, optin = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    const int usable = optin - 1024;  // the static scratch arrays and the part
    // All of L1 as shared memory: 2·K chunks per SM need it, and the kernel's global accesses
    // bypass L1 anyway (cp.async.cg in, streaming stores out).
    for (auto* kernel : {classifier_split_kernel<false>, classifier_split_kernel<true>}) {
      CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, usable));
      CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                      int(cudaSharedmemCarveoutMaxShared)));
    }
    return size_t(usable);
  }();
  return limit;
}

}  // namespace

void fused_classifier(bf16* logits, float* losses, int32_t* correct, const int32_t* targets, int N, int V,
                      int V_padded, float dloss, float softcap, bool write_dlogits, cudaStream_t stream, int split) {
  if (N <= 0) return;
  PG_CHECK(V > 0 && V <= V_padded, "fused_classifier: need 0 < V <= V_padded");
  PG_CHECK(split == 0 || split == 1 || split == 2 || split == 4 || split == 8,
           "fused_classifier: split must be 0 (automatic), 1, 2, 4 or 8");
  const bool vec = V_padded % 8 == 0 && (reinterpret_cast<uintptr_t>(logits) & 15) == 0;
  const int n_pack = V_padded / 8;
  int K = split;
  if (K == 0) {
    K = 1;
    while (K < kMaxSplit && size_t((n_pack + K - 1) / K) * 16 > split_smem_limit()) K *= 2;
  }
  const int chunk = (n_pack + K - 1) / K;
  const size_t smem = size_t(chunk) * 16;
  if (vec && smem <= split_smem_limit()) {
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(unsigned(N) * unsigned(K));
    cfg.blockDim = dim3(unsigned(kSplitThreads / K));
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cudaLaunchAttribute attr{};
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim.x = unsigned(K), attr.val.clusterDim.y = 1, attr.val.clusterDim.z = 1;
    cfg.attrs = &attr, cfg.numAttrs = 1;
    CUDA_CHECK(cudaLaunchKernelEx(&cfg, softcap > 0.f ? classifier_split_kernel<true> : classifier_split_kernel<false>,
                                  logits, losses, correct, targets, V, V_padded, chunk, dloss, softcap,
                                  write_dlogits));
  } else {
    PG_CHECK(split == 0, "fused_classifier: an explicit split needs 16-byte rows that fit in shared memory");
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
