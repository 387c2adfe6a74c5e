// The AdamW update over a contiguous range of the flat fp32 master buffer, and the global
// gradient norm. Same math as the CPU optimizer (optim/adamw.hpp), per element i:
//   g = grads[i]·grad_scale          (grad_scale: gradient clipping or loss-scale undo; 1 if none)
//   m <- b1·m + (1-b1)·g;  v <- b2·v + (1-b2)·g²
//   w <- w·(1 - lr·wd [when decay]) - (lr/(1-b1^t))·m / (sqrt(v)/sqrt(1-b2^t) + eps)
//   params_bf16[i] = bf16(w)         (the working copy the forward reads; may be null)
// Pointers: params, grads, m, v: [n] fp32; params_bf16: [n] bf16. The caller passes one call per
// run of consecutive tensors that share the decay flag. Grid-stride, block 256, 16-byte (4-wide)
// fp32 accesses when n and pointers allow.
//
// Global grad norm: out[0] = sqrt(Σ_i grads[i]²) over [n] fp32, deterministic: a fixed grid of
// kNormBlocks blocks each writes its partial sum of squares to scratch[kNormBlocks], and one block
// adds them in order (in fp64). The result stays on the device (for clipping without a sync).
#pragma once
#include "kernels/types.cuh"

namespace pg::kernels {

struct AdamWStep {
  float lr = 0.f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.f;
  int64_t t = 1;  // updates so far, counting this one (bias correction)
  float grad_scale = 1.f;
};

void adamw_update(float* params, bf16* params_bf16, const float* grads, float* m, float* v, int64_t n,
                  const AdamWStep& step, bool decay, cudaStream_t stream);

constexpr int kNormBlocks = 264;
void global_grad_norm(float* out, float* scratch, const float* grads, int64_t n, cudaStream_t stream);

// dst[i] = bf16(src[i]) over n elements (the bf16 working copy of the whole master buffer).
void copy_to_bf16(bf16* dst, const float* src, int64_t n, cudaStream_t stream);

}  // namespace pg::kernels
