// The fused classifier: logits -> (soft cap) -> softmax -> cross-entropy -> dlogits in one
// kernel, two passes over each row, with no probabilities stored (they are recomputed in the
// second pass from the row's max and denominator).
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
// Grid: one block per row. When V_padded % 8 == 0, the logits are 16-byte aligned and a row fits
// in shared memory (V_padded·2 bytes; V_padded up to ~113K on an H100), 512 threads copy the row
// into shared memory once (cp.async), take its max, then the sum of exp, then write the gradient
// from there: one read and one write of the logits in DRAM. Otherwise 1024 threads: pass 1 keeps
// an online (max, sum of exp) per thread over its strided elements, merged across the block;
// pass 2 reads the row again and writes the gradient.
#pragma once
#include "kernels/types.cuh"

namespace pg::kernels {

void fused_classifier(bf16* logits, float* losses, int32_t* correct, const int32_t* targets, int N, int V,
                      int V_padded, float dloss, float softcap, bool write_dlogits, cudaStream_t stream);

// sums[0] = Σ_n losses[n], sums[1] = Σ_n correct[n] (0 when correct is null), over N rows, in
// fp64 and in a fixed order (one block): what the host needs of a forward, in 16 bytes.
// sums: [2] fp64 on the device.
void loss_sums(double* sums, const float* losses, const int32_t* correct, int N, cudaStream_t stream);

}  // namespace pg::kernels
