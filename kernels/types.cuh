// The element types of the kernels' launch headers. Host-safe: plain C++ (tests, the backend)
// includes the launch headers, which declare host functions taking device pointers and a stream.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace pg::kernels {
using bf16 = __nv_bfloat16;
using f16 = __half;  // Newton-Schulz at fp16 only
}  // namespace pg::kernels
