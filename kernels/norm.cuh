// LayerNorm and RMSNorm over the last dim, fused with the residual add; QK-norm is the same
// RMSNorm without a gain, on rows of one head (N·NH rows of hs).
//
// Forward, per row r of C channels:
//   x = res_in[r] + branch[r]             (branch may be null: x = res_in[r], nothing stored)
//   res_out[r] = x                         (the residual stream after the add, bf16)
//   LayerNorm: mean = Σx/C, rstd = 1/sqrt(Σ(x-mean)²/C + eps), out = (x-mean)·rstd·gain + bias
//   RMSNorm:   rstd = 1/sqrt(Σx²/C + eps),                     out = x·rstd·gain
// mean[N], rstd[N] fp32 are saved for backward (mean only for LayerNorm; may be null for RMS).
// Backward, with xhat = (x-mean)·rstd (RMS: x·rstd) and g = dout·gain:
//   LayerNorm: d = rstd·(g - mean(g) - xhat·mean(g·xhat));  RMS: d = rstd·(g - xhat·mean(g·xhat))
//   dinp[r] = d (accumulate = false) or dinp[r] += d (accumulate = true: dinp is the residual
//   stream's gradient, which the norm's input gradient joins);  dgain += Σ_r dout·xhat,
//   dbias += Σ_r dout, dsum += Σ_r dinp[r] (fp32, accumulated; dsum sums the bf16 values dinp
//   holds after the call: the bias gradient of the linear layer whose output joined the residual
//   stream here, since that gradient is the residual stream's). The parameter sums are
//   deterministic: a fixed grid of blocks writes per-block partial sums to `scratch`, which a
//   second kernel adds in block order.
//
// Pointers: res_in, branch, res_out, out, dout, dinp, inp: [N, C] bf16 row-major; gain, bias: [C]
// bf16 (the working copy of the parameters; gain may be null = 1, bias may be null = 0);
// dgain, dbias, dsum: [C] fp32 (dbias, dsum may be null; both need dgain); scratch:
// norm_bwd_scratch_floats(C) fp32. x of the backward is the saved res_out (or the norm's input
// when there was no add). dinp may alias dout when not accumulating. C % 8 == 0 is not required.
// Grid: one warp per row, 4 warps per block (forward); backward: as many blocks as the GPU runs
// at once (at most kNormBwdBlocks), striding over the rows, then a reduction of the per-block
// partials with blocks of 8×32 threads per 8 columns. With 16-byte rows: for 256 <= C <= 1024
// (the model's norms) ceil(C/256) warps own a row (NormBwdKernel::Group; WarpRing, the default,
// gives one warp a row for C <= 768), each thread 8 columns and their parameter sums over all its
// rows, with the next rows streamed into a shared-memory ring (blocks of 384 threads); for
// C < 256 (QK-norm's heads) a warp owns a row in registers, each lane its columns' sums.
// Otherwise rows are re-read and every warp keeps the sums in shared memory.
#pragma once
#include "kernels/types.cuh"

namespace pg::kernels {

enum class NormKind { LayerNorm, RMSNorm };

void residual_norm_fwd(bf16* res_out, bf16* out, float* mean, float* rstd, const bf16* res_in,
                       const bf16* branch, const bf16* gain, const bf16* bias, int N, int C,
                       float eps, NormKind kind, cudaStream_t stream);

constexpr int kNormBwdBlocks = 1056;  // at most 8 per SM of an H100
inline int64_t norm_bwd_scratch_floats(int C) { return int64_t(kNormBwdBlocks) * 3 * C; }

// Which backward for 16-byte rows of 256 to 768 columns: WarpRing, the default, a warp a row with
// its next row in a shared-memory ring (half the group kernel's instructions a row by count; 16%
// faster than it at GPT-2's N = 65536, C = 768 on an H200, the step 1.2 ms faster,
// bench/RESULTS.md); Group, the group kernel above, kept to measure beside it. Other shapes take
// the same kernel either way.
enum class NormBwdKernel { Group, WarpRing };

void norm_bwd(bf16* dinp, bool accumulate, float* dgain, float* dbias, float* dsum, float* scratch,
              const bf16* dout, const bf16* inp, const bf16* gain, const float* mean,
              const float* rstd, int N, int C, NormKind kind, cudaStream_t stream,
              NormBwdKernel which = NormBwdKernel::WarpRing);

}  // namespace pg::kernels
