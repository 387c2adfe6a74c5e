// Mixture-of-Experts kernels (math, layouts and precision: moe.cuh).
#include <initializer_list>

#include "backend/cuda/check.hpp"
#include "core/error.hpp"
#include "kernels/common.cuh"
#include "kernels/moe.cuh"

namespace pg::kernels {
namespace {

constexpr int kMaxTopK = 8;
constexpr int kWarpsPerBlock = 8;  // router kernels: one warp per token
constexpr int kRowBlock = 128;     // row kernels: one block per token row

// ---- routing ------------------------------------------------------------------------------------
__global__ void router_fwd_kernel(float* probs, float* lse, int32_t* sel, float* gates, const float* logits,
                                  const bf16* score_bias, int N, int E, int k) {
  const int lane = threadIdx.x & 31;
  const int n = blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
  if (n >= N) return;  // whole warps leave together
  const float* z = logits + int64_t(n) * E;
  float* p = probs + int64_t(n) * E;
  float mx = -INFINITY;
  for (int e = lane; e < E; e += 32) mx = fmaxf(mx, z[e]);
  mx = warp_max(mx);
  float sum = 0.f;
  for (int e = lane; e < E; e += 32) sum += expf(z[e] - mx);
  sum = warp_sum(sum);
  for (int e = lane; e < E; e += 32) p[e] = expf(z[e] - mx) / sum;
  if (lane == 0) lse[n] = mx + logf(sum);
  __syncwarp();  // the probabilities each lane stored, visible to all lanes

  int chosen[kMaxTopK];
  float chosen_p[kMaxTopK];
  float total = 0.f;
  for (int j = 0; j < k; ++j) {
    float best = -INFINITY;
    int best_e = E;  // larger than any index: loses every tie
    for (int e = lane; e < E; e += 32) {
      bool taken = false;
      for (int i = 0; i < j; ++i) taken = taken || chosen[i] == e;
      if (taken) continue;
      const float s = score_bias ? p[e] + to_f32(score_bias[e]) : p[e];
      if (s > best || (s == best && e < best_e)) best = s, best_e = e;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ob = __shfl_xor_sync(0xffffffffu, best, o);
      const int oe = __shfl_xor_sync(0xffffffffu, best_e, o);
      if (ob > best || (ob == best && oe < best_e)) best = ob, best_e = oe;
    }
    chosen[j] = best_e;
    chosen_p[j] = p[best_e];
    total += chosen_p[j];
  }
  if (lane < k) {
    float mine = 0.f;
    int mine_e = 0;
    for (int j = 0; j < k; ++j)
      if (j == lane) mine = chosen_p[j], mine_e = chosen[j];
    sel[int64_t(n) * k + lane] = mine_e;
    gates[int64_t(n) * k + lane] = mine / total;
  }
}

__global__ void router_bwd_kernel(float* dl32, bf16* dl16, const float* dgates, const float* gates,
                                  const int32_t* sel, const float* probs, const float* lse,
                                  const int32_t* counts, int N, int E, int k, float aux_c, float z_scale) {
  const int lane = threadIdx.x & 31;
  const int n = blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
  if (n >= N) return;
  const float* p = probs + int64_t(n) * E;
  const float* g = gates + int64_t(n) * k;
  const int32_t* s = sel + int64_t(n) * k;
  // Σ_i g_i·dg_i (every lane computes it, k is small); Σ_e p_e·dp_e for the aux term.
  float gdg = 0.f;
  if (dgates)
    for (int j = 0; j < k; ++j) gdg += g[j] * dgates[int64_t(n) * k + j];
  float pdp = 0.f;
  if (aux_c != 0.f) {
    for (int e = lane; e < E; e += 32) pdp += p[e] * (aux_c * float(counts[e]));
    pdp = warp_sum(pdp);
  }
  const float zc = z_scale != 0.f ? z_scale * 2.f * lse[n] / float(N) : 0.f;
  for (int e = lane; e < E; e += 32) {
    float d = 0.f;
    if (dgates)
      for (int j = 0; j < k; ++j)
        if (s[j] == e) d += g[j] * (dgates[int64_t(n) * k + j] - gdg);
    if (aux_c != 0.f) d += p[e] * (aux_c * float(counts[e]) - pdp);
    d += zc * p[e];
    if (dl32) dl32[int64_t(n) * E + e] = d;
    if (dl16) dl16[int64_t(n) * E + e] = from_f32<bf16>(d);
  }
}

// scratch[e] = Σ_n probs[n,e]: one block per expert.
__global__ void prob_colsum_kernel(double* colsum, const float* probs, int N, int E) {
  __shared__ double red[32];
  const int e = blockIdx.x;
  double s = 0.0;
  for (int n = threadIdx.x; n < N; n += blockDim.x) s += double(probs[int64_t(n) * E + e]);
  s = block_sum(s, red);
  if (threadIdx.x == 0) colsum[e] = s;
}

__global__ void router_loss_kernel(double* losses, const double* colsum, const float* lse, const int32_t* counts,
                                   int N, int E, int k) {
  __shared__ double red[32];
  double a = 0.0;
  for (int e = threadIdx.x; e < E; e += blockDim.x)
    a += double(counts[e]) / (double(N) * k) * (colsum[e] / N);
  a = block_sum(a, red);
  double z = 0.0;
  for (int n = threadIdx.x; n < N; n += blockDim.x) z += double(lse[n]) * double(lse[n]);
  z = block_sum(z, red);
  if (threadIdx.x == 0) losses[0] = E * a, losses[1] = z / N;
}

// ---- dispatch plan ------------------------------------------------------------------------------
// Assignment q in priority order (q = j·N + n) is assignment i = n·k + j.
__device__ __forceinline__ int64_t priority_to_assignment(int64_t q, int N, int k) {
  return (q % N) * k + q / N;
}

// hist[c·E + e] = assignments of chunk c that chose e.
__global__ void plan_hist_kernel(int32_t* hist, const int32_t* sel, int N, int E, int k) {
  extern __shared__ int32_t sh[];
  for (int e = threadIdx.x; e < E; e += blockDim.x) sh[e] = 0;
  __syncthreads();
  const int64_t q = int64_t(blockIdx.x) * kMoePlanChunk + threadIdx.x;
  if (q < int64_t(N) * k) atomicAdd(&sh[sel[priority_to_assignment(q, N, k)]], 1);
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x) hist[int64_t(blockIdx.x) * E + e] = sh[e];
}

// offset[c·E + e] = assignments of chunks before c that chose e; counts[e] = all of them.
__global__ void plan_scan_kernel(int32_t* offset, int32_t* counts, const int32_t* hist, int n_chunk, int E) {
  for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < E; e += gridDim.x * blockDim.x) {
    int32_t run = 0;
    for (int c = 0; c < n_chunk; ++c) {
      offset[int64_t(c) * E + e] = run;
      run += hist[int64_t(c) * E + e];
    }
    counts[e] = run;
  }
}

// Each assignment's rank among the earlier ones of its chunk that chose the same expert.
__global__ void plan_assign_kernel(int32_t* slot, int32_t* row_src, const int32_t* offset, const int32_t* sel,
                                   int N, int E, int k, int cap) {
  __shared__ int32_t ex[kMoePlanChunk];
  const int64_t q = int64_t(blockIdx.x) * kMoePlanChunk + threadIdx.x;
  const bool valid = q < int64_t(N) * k;
  const int64_t i = valid ? priority_to_assignment(q, N, k) : 0;
  const int e = valid ? sel[i] : -1;
  ex[threadIdx.x] = e;
  __syncthreads();
  if (!valid) return;
  int rank = 0;
  for (int t = 0; t < int(threadIdx.x); ++t) rank += ex[t] == e;
  const int pos = offset[int64_t(blockIdx.x) * E + e] + rank;
  if (pos < cap) {
    const int32_t r = e * cap + pos;
    slot[i] = r;
    row_src[r] = int32_t(i);
  } else {
    slot[i] = -1;
  }
}

// ---- rows ---------------------------------------------------------------------------------------
__global__ void gather_kernel(bf16* xe, const bf16* x, const int32_t* row_src, int k, int C) {
  const int64_t r = blockIdx.x;
  const int32_t i = row_src[r];
  bf16* out = xe + r * C;
  if (i < 0) {
    for (int c = threadIdx.x; c < C; c += blockDim.x) out[c] = from_f32<bf16>(0.f);
    return;
  }
  const bf16* in = x + int64_t(i / k) * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) out[c] = in[c];
}

__global__ void scatter_kernel(bf16* dx, bool accumulate, const bf16* dxe, const int32_t* slot, int k, int C) {
  const int64_t n = blockIdx.x;
  const int32_t* s = slot + n * k;
  bf16* out = dx + n * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    float acc = 0.f;
    for (int j = 0; j < k; ++j)
      if (s[j] >= 0) acc += to_f32(dxe[int64_t(s[j]) * C + c]);
    out[c] = from_f32<bf16>(accumulate ? to_f32(out[c]) + acc : acc);
  }
}

__global__ void combine_fwd_kernel(bf16* y, const bf16* eo, const float* gates, const int32_t* slot, int k, int C) {
  const int64_t n = blockIdx.x;
  const int32_t* s = slot + n * k;
  const float* g = gates + n * k;
  bf16* out = y + n * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    float acc = 0.f;
    for (int j = 0; j < k; ++j)
      if (s[j] >= 0) acc += g[j] * to_f32(eo[int64_t(s[j]) * C + c]);
    out[c] = from_f32<bf16>(acc);
  }
}

// One block per expert row: deo for every row, dgates for the kept ones.
__global__ void combine_bwd_kernel(bf16* deo, float* dgates, const bf16* dy, const bf16* eo, const float* gates,
                                   const int32_t* row_src, int k, int C) {
  __shared__ float red[32];
  const int64_t r = blockIdx.x;
  const int32_t i = row_src[r];
  bf16* out = deo + r * C;
  if (i < 0) {
    for (int c = threadIdx.x; c < C; c += blockDim.x) out[c] = from_f32<bf16>(0.f);
    return;
  }
  const float g = gates[i];
  const bf16* d = dy + int64_t(i / k) * C;
  const bf16* o = eo + r * C;
  float dot = 0.f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float dc = to_f32(d[c]);
    dot += dc * to_f32(o[c]);
    out[c] = from_f32<bf16>(g * dc);
  }
  dot = block_sum(dot, red);
  if (threadIdx.x == 0) dgates[i] = dot;
}

// ---- rows, 16 bytes at a time: one warp per row, each lane 8 bf16 per load (C % 8 == 0 and
// 16-byte aligned rows; the host side checks and otherwise takes the kernels above) ----------------
constexpr int kRowWarps = 8;  // rows (warps) per block

__global__ void gather_vec8_kernel(bf16* xe, const bf16* x, const int32_t* row_src, int64_t rows, int k, int C) {
  const int64_t r = int64_t(blockIdx.x) * kRowWarps + (threadIdx.x >> 5);
  if (r >= rows) return;
  const int lane = threadIdx.x & 31, V = C / 8;
  const int32_t i = row_src[r];
  uint4* out = reinterpret_cast<uint4*>(xe + r * C);
  if (i < 0) {
    for (int v = lane; v < V; v += 32) out[v] = make_uint4(0u, 0u, 0u, 0u);
    return;
  }
  const uint4* in = reinterpret_cast<const uint4*>(x + int64_t(i / k) * C);
  for (int v = lane; v < V; v += 32) out[v] = in[v];
}

__global__ void scatter_vec8_kernel(bf16* dx, bool accumulate, const bf16* dxe, const int32_t* slot, int N, int k,
                                    int C) {
  const int64_t n = int64_t(blockIdx.x) * kRowWarps + (threadIdx.x >> 5);
  if (n >= N) return;
  const int lane = threadIdx.x & 31, V = C / 8;
  const int32_t* s = slot + n * k;
  uint4* out = reinterpret_cast<uint4*>(dx + n * C);
  for (int v = lane; v < V; v += 32) {
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}, t[8];
    for (int j = 0; j < k; ++j) {
      if (s[j] < 0) continue;
      unpack8(reinterpret_cast<const uint4*>(dxe + int64_t(s[j]) * C)[v], t);
#pragma unroll
      for (int q = 0; q < 8; ++q) acc[q] += t[q];
    }
    if (accumulate) {
      unpack8(out[v], t);
#pragma unroll
      for (int q = 0; q < 8; ++q) acc[q] = t[q] + acc[q];
    }
    out[v] = pack8(acc);
  }
}

__global__ void combine_fwd_vec8_kernel(bf16* y, const bf16* eo, const float* gates, const int32_t* slot, int N,
                                        int k, int C) {
  const int64_t n = int64_t(blockIdx.x) * kRowWarps + (threadIdx.x >> 5);
  if (n >= N) return;
  const int lane = threadIdx.x & 31, V = C / 8;
  const int32_t* s = slot + n * k;
  const float* g = gates + n * k;
  uint4* out = reinterpret_cast<uint4*>(y + n * C);
  for (int v = lane; v < V; v += 32) {
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}, t[8];
    for (int j = 0; j < k; ++j) {
      if (s[j] < 0) continue;
      unpack8(reinterpret_cast<const uint4*>(eo + int64_t(s[j]) * C)[v], t);
      const float gj = g[j];
#pragma unroll
      for (int q = 0; q < 8; ++q) acc[q] += gj * t[q];
    }
    out[v] = pack8(acc);
  }
}

// One warp per expert row: deo for every row, dgates (a warp sum in fixed order) for the kept ones.
__global__ void combine_bwd_vec8_kernel(bf16* deo, float* dgates, const bf16* dy, const bf16* eo, const float* gates,
                                        const int32_t* row_src, int64_t rows, int k, int C) {
  const int64_t r = int64_t(blockIdx.x) * kRowWarps + (threadIdx.x >> 5);
  if (r >= rows) return;
  const int lane = threadIdx.x & 31, V = C / 8;
  const int32_t i = row_src[r];
  uint4* out = reinterpret_cast<uint4*>(deo + r * C);
  if (i < 0) {
    for (int v = lane; v < V; v += 32) out[v] = make_uint4(0u, 0u, 0u, 0u);
    return;
  }
  const float g = gates[i];
  const uint4* d = reinterpret_cast<const uint4*>(dy + int64_t(i / k) * C);
  const uint4* o = reinterpret_cast<const uint4*>(eo + r * C);
  float dot = 0.f;
  for (int v = lane; v < V; v += 32) {
    float dv[8], ov[8];
    unpack8(d[v], dv);
    unpack8(o[v], ov);
#pragma unroll
    for (int q = 0; q < 8; ++q) dot += dv[q] * ov[q], dv[q] *= g;
    out[v] = pack8(dv);
  }
  dot = warp_sum(dot);
  if (lane == 0) dgates[i] = dot;
}

__global__ void expert_bias_fwd_kernel(bf16* out, const bf16* bias, int cap, int OC) {
  const int64_t r = blockIdx.x;
  const bf16* b = bias + int64_t(r / cap) * OC;
  bf16* o = out + r * OC;
  for (int c = threadIdx.x; c < OC; c += blockDim.x) o[c] = from_f32<bf16>(to_f32(o[c]) + to_f32(b[c]));
}

// Block (32 columns × 8 row lanes) per (column tile, expert): each row lane sums rows lane,
// lane+8, ... in order, then the 8 partials are added in lane order.
__global__ void expert_bias_bwd_kernel(float* dbias, const bf16* dout, int cap, int OC) {
  __shared__ float part[8][33];
  const int e = blockIdx.y, col = blockIdx.x * 32 + threadIdx.x;
  float s = 0.f;
  if (col < OC)
    for (int p = threadIdx.y; p < cap; p += 8) s += to_f32(dout[(int64_t(e) * cap + p) * OC + col]);
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && col < OC) {
    float t = 0.f;
    for (int y = 0; y < 8; ++y) t += part[y][threadIdx.x];
    dbias[int64_t(e) * OC + col] += t;
  }
}

unsigned warps_grid(int N) { return unsigned((N + kWarpsPerBlock - 1) / kWarpsPerBlock); }
unsigned row_warps_grid(int64_t rows) { return unsigned((rows + kRowWarps - 1) / kRowWarps); }
bool vec8(int C, std::initializer_list<const void*> ptrs) {
  if (C % 8 != 0) return false;
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

}  // namespace

void moe_router_fwd(float* probs, float* lse, int32_t* sel, float* gates, const float* logits,
                    const bf16* score_bias, int N, int E, int k, cudaStream_t stream) {
  PG_CHECK(k >= 1 && k <= E && k <= kMaxTopK, "moe_router_fwd: top_k must be in [1, min(n_expert, 8)]");
  if (N <= 0) return;
  router_fwd_kernel<<<warps_grid(N), 32 * kWarpsPerBlock, 0, stream>>>(probs, lse, sel, gates, logits, score_bias,
                                                                      N, E, k);
  CUDA_CHECK_LAUNCH();
}

void moe_router_bwd(float* dlogits_f32, bf16* dlogits_bf16, const float* dgates, const float* gates,
                    const int32_t* sel, const float* probs, const float* lse, const int32_t* counts,
                    int N, int E, int k, double aux_scale, double z_scale, cudaStream_t stream) {
  if (N <= 0) return;
  // dprobs[n,e] = aux_scale·E·counts[e]/(N·k)/N = aux_c·counts[e].
  const float aux_c = float(aux_scale * E / (double(N) * k) / N);
  router_bwd_kernel<<<warps_grid(N), 32 * kWarpsPerBlock, 0, stream>>>(
      dlogits_f32, dlogits_bf16, dgates, gates, sel, probs, lse, counts, N, E, k, aux_c, float(z_scale));
  CUDA_CHECK_LAUNCH();
}

void moe_router_loss_fwd(double* losses, double* scratch, const float* probs, const float* lse,
                         const int32_t* counts, int N, int E, int k, cudaStream_t stream) {
  if (N <= 0) return;
  prob_colsum_kernel<<<unsigned(E), 256, 0, stream>>>(scratch, probs, N, E);
  CUDA_CHECK_LAUNCH();
  router_loss_kernel<<<1, 1024, 0, stream>>>(losses, scratch, lse, counts, N, E, k);
  CUDA_CHECK_LAUNCH();
}

void moe_dispatch_plan(int32_t* slot, int32_t* row_src, int32_t* counts, int32_t* scratch,
                       const int32_t* sel, int N, int E, int k, int cap, cudaStream_t stream) {
  PG_CHECK(cap >= 1 && cap <= N, "moe_dispatch_plan: capacity must be in [1, tokens]");
  const int64_t NK = int64_t(N) * k;
  const int n_chunk = int((NK + kMoePlanChunk - 1) / kMoePlanChunk);
  int32_t* hist = scratch;
  int32_t* offset = scratch + int64_t(n_chunk) * E;
  CUDA_CHECK(cudaMemsetAsync(row_src, 0xff, size_t(E) * cap * sizeof(int32_t), stream));  // all -1
  plan_hist_kernel<<<unsigned(n_chunk), kMoePlanChunk, size_t(E) * sizeof(int32_t), stream>>>(hist, sel, N, E, k);
  CUDA_CHECK_LAUNCH();
  plan_scan_kernel<<<unsigned((E + 127) / 128), 128, 0, stream>>>(offset, counts, hist, n_chunk, E);
  CUDA_CHECK_LAUNCH();
  plan_assign_kernel<<<unsigned(n_chunk), kMoePlanChunk, 0, stream>>>(slot, row_src, offset, sel, N, E, k, cap);
  CUDA_CHECK_LAUNCH();
}

void moe_gather(bf16* xe, const bf16* x, const int32_t* row_src, int E, int cap, int k, int C,
                cudaStream_t stream) {
  const int64_t rows = int64_t(E) * cap;
  if (rows <= 0) return;
  if (vec8(C, {xe, x})) gather_vec8_kernel<<<row_warps_grid(rows), 32 * kRowWarps, 0, stream>>>(xe, x, row_src, rows, k, C);
  else gather_kernel<<<unsigned(rows), kRowBlock, 0, stream>>>(xe, x, row_src, k, C);
  CUDA_CHECK_LAUNCH();
}

void moe_scatter(bf16* dx, bool accumulate, const bf16* dxe, const int32_t* slot, int N, int k, int C,
                 cudaStream_t stream) {
  if (N <= 0) return;
  if (vec8(C, {dx, dxe}))
    scatter_vec8_kernel<<<row_warps_grid(N), 32 * kRowWarps, 0, stream>>>(dx, accumulate, dxe, slot, N, k, C);
  else scatter_kernel<<<unsigned(N), kRowBlock, 0, stream>>>(dx, accumulate, dxe, slot, k, C);
  CUDA_CHECK_LAUNCH();
}

void moe_combine_fwd(bf16* y, const bf16* eo, const float* gates, const int32_t* slot, int N, int k,
                     int C, cudaStream_t stream) {
  if (N <= 0) return;
  if (vec8(C, {y, eo}))
    combine_fwd_vec8_kernel<<<row_warps_grid(N), 32 * kRowWarps, 0, stream>>>(y, eo, gates, slot, N, k, C);
  else combine_fwd_kernel<<<unsigned(N), kRowBlock, 0, stream>>>(y, eo, gates, slot, k, C);
  CUDA_CHECK_LAUNCH();
}

void moe_combine_bwd(bf16* deo, float* dgates, const bf16* dy, const bf16* eo, const float* gates,
                     const int32_t* row_src, int N, int E, int cap, int k, int C, cudaStream_t stream) {
  CUDA_CHECK(cudaMemsetAsync(dgates, 0, size_t(N) * k * sizeof(float), stream));  // dropped choices
  const int64_t rows = int64_t(E) * cap;
  if (rows <= 0) return;
  if (vec8(C, {deo, dy, eo}))
    combine_bwd_vec8_kernel<<<row_warps_grid(rows), 32 * kRowWarps, 0, stream>>>(deo, dgates, dy, eo, gates, row_src,
                                                                               rows, k, C);
  else combine_bwd_kernel<<<unsigned(rows), kRowBlock, 0, stream>>>(deo, dgates, dy, eo, gates, row_src, k, C);
  CUDA_CHECK_LAUNCH();
}

void moe_expert_bias_fwd(bf16* out, const bf16* bias, int E, int cap, int OC, cudaStream_t stream) {
  const int64_t rows = int64_t(E) * cap;
  if (rows <= 0) return;
  expert_bias_fwd_kernel<<<unsigned(rows), kRowBlock, 0, stream>>>(out, bias, cap, OC);
  CUDA_CHECK_LAUNCH();
}

void moe_expert_bias_bwd(float* dbias, const bf16* dout, int E, int cap, int OC, cudaStream_t stream) {
  if (E <= 0 || cap <= 0) return;
  const dim3 grid(unsigned((OC + 31) / 32), unsigned(E)), block(32, 8);
  expert_bias_bwd_kernel<<<grid, block, 0, stream>>>(dbias, dout, cap, OC);
  CUDA_CHECK_LAUNCH();
}

}  // namespace pg::kernels
