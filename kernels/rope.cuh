// Rotary position embedding, in place on x[B,Tn,NH,hs] bf16 (hs even), as in the CPU reference:
// the pair (x_i, x_{i+hs/2}), i < hs/2, at position t is rotated by θ = t·theta^(-2i/hs):
//   forward:  (a, b) <- (a·cos θ - b·sin θ, a·sin θ + b·cos θ)
//   backward: the transpose, applied in place to the gradient: (da, db) <- (da·cos θ + db·sin θ,
//             -da·sin θ + db·cos θ)  (it transforms, it does not accumulate).
// The angle t·freq is formed in fp64 and reduced mod 2π, then rotated with fp32 sincos: its error
// stays ~10^-7 rad at any t, far below bf16's resolution. Grid: one thread per pair, block 256.
#pragma once
#include "kernels/types.cuh"

namespace pg::kernels {

void rope_fwd(bf16* x, int B, int Tn, int NH, int hs, float theta, cudaStream_t stream);
void rope_bwd(bf16* dx, int B, int Tn, int NH, int hs, float theta, cudaStream_t stream);

}  // namespace pg::kernels
