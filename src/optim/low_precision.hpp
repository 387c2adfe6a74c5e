// Rounding a float to the nearest bf16 / fp16 value (round to nearest, ties to even), returned
// as a float. The CPU Newton-Schulz uses these to reproduce what the GPU's bf16/fp16 GEMM inputs
// and outputs lose, so the CPU tests can bound the error the GPU path will see.
//   bf16: 8 exponent bits (float's range), 7 stored mantissa bits: relative step 2^-8.
//   fp16: 5 exponent bits (normal from 2^-14, max 65504, subnormal step 2^-24), 10 mantissa bits.
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

namespace pg {

inline float round_to_bf16(float x) {
  uint32_t u = std::bit_cast<uint32_t>(x);
  if ((u & 0x7f800000u) == 0x7f800000u) return x;  // inf and nan pass through
  // Add just under half an ulp of bf16, plus one when the kept lsb is odd: ties go to even.
  u += 0x7fffu + ((u >> 16) & 1u);
  return std::bit_cast<float>(u & 0xffff0000u);
}

inline float round_to_fp16(float x) {
  const float ax = std::fabs(x);
  if (std::isnan(x)) return x;
  // 65520 is half-way between 65504 (largest half) and 65536; ties go to even, i.e. to infinity.
  if (ax >= 65520.0f) return std::copysign(std::numeric_limits<float>::infinity(), x);
  if (ax < 0x1p-14f) return std::nearbyint(x * 0x1p24f) * 0x1p-24f;  // subnormal: multiples of 2^-24
  uint32_t u = std::bit_cast<uint32_t>(x);
  u += 0xfffu + ((u >> 13) & 1u);  // keep 10 of float's 23 mantissa bits
  return std::bit_cast<float>(u & 0xffffe000u);
}

}  // namespace pg
