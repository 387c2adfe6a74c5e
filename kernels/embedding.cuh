// Token embedding plus optional learned positions, forward and backward.
//   forward:  out[b,t,:] = wte[tokens[b,t], :] + wpe[t, :]            (wpe may be null)
//   backward: dwte[tokens[b,t], :] += dout[b,t,:];  dwpe[t,:] += Σ_b dout[b,t,:]
// Pointers: out, dout: [B,Tn,C] bf16; tokens: [B,Tn] int32 in [0,V); wte: [V,C] bf16, wpe: [>=Tn,C]
// bf16 (the working copies); dwte: [V,C] fp32, dwpe: [>=Tn,C] fp32 (accumulated).
// Grids: forward one thread per (row, 8-channel pack) when C % 8 == 0 (16-byte loads), per
// channel otherwise; dwpe one thread per (t, c), summing over b in order (deterministic); dwte one
// thread per (row, 4-channel pack) with a float4 atomicAdd when C % 4 == 0 (per (row, c) with fp32
// atomicAdd otherwise), since rows with the same token collide (the order of those additions, and
// so the last bits of dwte, may vary from run to run).
#pragma once
#include "kernels/types.cuh"

namespace pg::kernels {

void embedding_fwd(bf16* out, const int32_t* tokens, const bf16* wte, const bf16* wpe, int B, int Tn,
                   int C, cudaStream_t stream);
void embedding_bwd(float* dwte, float* dwpe, const bf16* dout, const int32_t* tokens, int B, int Tn,
                   int C, cudaStream_t stream);

}  // namespace pg::kernels
