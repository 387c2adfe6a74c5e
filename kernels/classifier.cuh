// The fused classifier: logits -> (soft cap) -> softmax -> cross-entropy -> dlogits in one
// kernel, with no probabilities stored in global memory (the gradient pass takes them from shared
// memory or recomputes them from the row's max and denominator).
// Per row n, over the first V of its V_padded logits (the padding is ignored and gets gradient 0):
//   z_v = cap·tanh(l_v/cap) when cap > 0, else l_v
//   losses[n] = logsumexp(z) - z[targets[n]]                         (fp32)
//   correct[n] = 1 if argmax_v l_v (the lowest index on ties) == targets[n], else 0 (may be null)
//   dlogits[n,v] = dloss·(softmax(z)_v - [v == target])·(1 - (z_v/cap)²  when cap > 0)
// where dloss is the gradient of the objective with respect to each row's loss (loss_scale / N
// for a mean). dlogits is WRITTEN over logits (bf16, in place) when write_dlogits; otherwise
// only the losses are computed (evaluation).
// Pointers: logits [N, V_padded] bf16 row-major; targets [N] int32 in [0, V); losses [N] fp32;
// correct [N] int32.
// Grid: when V_padded % 8 == 0, the logits are 16-byte aligned and a row fits in the shared
// memory of K <= 8 CTAs, each row goes to a cluster of K CTAs (the smallest power of two whose
// chunks fit: K = 1 for GPT-2's 50304, 512 threads, two rows per SM), which copy their chunk of
// the row into shared memory once (cp.async) and, for K > 1, combine (max, sum of exp, argmax)
// through distributed shared memory: one read and one write of the logits in DRAM, one exp per
// logit (classifier.cu says how). Otherwise one block of 1024 threads per row: pass 1 keeps an online (max, sum of exp) per
// thread over its strided elements, merged across the block; pass 2 reads the row again and
// writes the gradient.
#pragma once
#include "kernels/types.cuh"

namespace pg::kernels {

// split: K, 0 for the automatic choice; 1, 2, 4 or 8 forces it (tests and benchmarks; the row
// must then take the split path).
void fused_classifier(bf16* logits, float* losses, int32_t* correct, const int32_t* targets, int N, int V,
                      int V_padded, float dloss, float softcap, bool write_dlogits, cudaStream_t stream,
                      int split = 0);

// sums[0] = Σ_n losses[n], sums[1] = Σ_n correct[n] (0 when correct is null), over N rows, in
// fp64 and in a fixed order (one block): what the host needs of a forward, in 16 bytes.
// sums: [2] fp64 on the device.
void loss_sums(double* sums, const float* losses, const int32_t* correct, int N, cudaStream_t stream);

}  // namespace pg::kernels
