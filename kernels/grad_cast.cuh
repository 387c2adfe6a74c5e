// The casts around a bf16 gradient collective (dist.grad_dtype = bf16 on --device cuda): the fp32
// gradient bucket is rounded to bf16 (kernels::copy_to_bf16, adamw.cuh: round to nearest even),
// reduced by NCCL in bf16, and widened back here, exactly (every bf16 value is an fp32 value):
//   dst[i] = float(src[i]),  i < n;  dst, src: device pointers, [n].
// Grid-stride, block 256. Test: tests/gpu/test_cuda_dist.cpp (against dist::bf16_value).
#pragma once
#include "kernels/types.cuh"

namespace pg::kernels {

void copy_from_bf16(float* dst, const bf16* src, int64_t n, cudaStream_t stream);

}  // namespace pg::kernels
