// Elementwise activations of the MLP and the logits, bf16 in memory, fp32 math.
//   GELU (tanh approximation, GPT-2):  gelu(x) = 0.5·x·(1 + tanh(k·(x + 0.044715·x³))), k = sqrt(2/π)
//                                       gelu'(x) = 0.5·(1 + th) + 0.5·x·(1 - th²)·k·(1 + 3·0.044715·x²)
//   ReLU²:                              relu2(x) = max(x,0)²,  relu2'(x) = 2·max(x,0)
//   logit soft cap:                     out = cap·tanh(x/cap),  dinp = dout·(1 - (out/cap)²)
// Layout: flat arrays of n elements (any shape, contiguous). Grid-stride over packs of 8 bf16
// (16-byte loads/stores) with a scalar tail; block 256.
// Unlike the CPU reference (which accumulates), the backwards here WRITE dinp, and dinp may
// alias dout: the CUDA model gives each activation gradient its own buffer, so the extra read of
// an accumulate would buy nothing.
#pragma once
#include "kernels/types.cuh"

namespace pg::kernels {

void gelu_fwd(bf16* out, const bf16* inp, int64_t n, cudaStream_t stream);
void gelu_bwd(bf16* dinp, const bf16* dout, const bf16* inp, int64_t n, cudaStream_t stream);
void relu2_fwd(bf16* out, const bf16* inp, int64_t n, cudaStream_t stream);
void relu2_bwd(bf16* dinp, const bf16* dout, const bf16* inp, int64_t n, cudaStream_t stream);
// Soft cap of fp32 or bf16 logits (the fused classifier applies the cap itself; these are for
// logits that other code consumes, e.g. sampling).
void softcap_fwd(bf16* out, const bf16* inp, int64_t n, float cap, cudaStream_t stream);
void softcap_bwd(bf16* dinp, const bf16* dout, const bf16* out, int64_t n, float cap,
                 cudaStream_t stream);

}  // namespace pg::kernels
