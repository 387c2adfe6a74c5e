// 8-lane float vectors (GCC/Clang vector extensions) with exp and tanh, for the fp32 loops that
// are dominated by transcendentals: the cross-entropy softmax over V = 50257, GELU, the logit soft
// cap. Scalar expf/tanhf cost 10-25 ns per element there; these run several times faster.
//
// Every function works lane by lane, so an element's result does not depend on its position in a
// vector or on how a loop was split over threads. Loops using them are marked PG_SIMD_CLONES: GCC
// compiles them for AVX-512, AVX2 and the x86-64 baseline and picks one at load time (results
// may differ in the last bit between instruction sets, through FMA contraction, never between
// runs on one machine).
#pragma once
#include <cstdint>
#include <cstring>

// Clones are resolved through an ifunc while the program loads, before a sanitizer runtime is
// up; sanitizer builds therefore get the baseline code only.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    !defined(__SANITIZE_THREAD__) && !defined(__SANITIZE_ADDRESS__)
#define PG_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PG_SIMD_CLONES
#endif

// The helpers pass 32-byte vectors by value, whose calling convention differs with and without
// AVX. A clone calling a helper compiled for the baseline would get garbage back, so every helper
// taking or returning a vector must be PG_VEC_INLINE (always inlined into its caller's clone);
// GCC's -Wpsabi note about the ABI change is then moot.
#define PG_VEC_INLINE [[gnu::always_inline]] inline
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

namespace pg::cpu::simd {

using f32x8 = float __attribute__((vector_size(32)));
using u32x8 = uint32_t __attribute__((vector_size(32)));
using f64x8 = double __attribute__((vector_size(64)));
constexpr int kLanes = 8;

PG_VEC_INLINE f32x8 splat(float v) { return f32x8{} + v; }

PG_VEC_INLINE f32x8 load(const float* p) {
  f32x8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
// The n < 8 elements at p, the other lanes set to `fill`.
PG_VEC_INLINE f32x8 load_tail(const float* p, int64_t n, float fill) {
  f32x8 v = splat(fill);
  for (int64_t i = 0; i < n; ++i) v[i] = p[i];
  return v;
}
PG_VEC_INLINE void store(float* p, f32x8 v) { std::memcpy(p, &v, sizeof v); }
PG_VEC_INLINE void store_tail(float* p, f32x8 v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) p[i] = v[i];
}

PG_VEC_INLINE f32x8 from_bits(u32x8 b) {
  f32x8 v;
  std::memcpy(&v, &b, sizeof v);
  return v;
}
PG_VEC_INLINE u32x8 to_bits(f32x8 v) {
  u32x8 b;
  std::memcpy(&b, &v, sizeof b);
  return b;
}

// e^x for x <= 0. x = n·ln2 + r with |r| <= ln2/2 (n by the add-1.5·2^23 rounding trick),
// e^r by its degree-7 Taylor polynomial (truncation < 1e-8 relative), 2^n written into the
// exponent bits. Below -87, where e^x nears the smallest normal float, the result is 0.
// -inf gives 0; NaN stays NaN.
PG_VEC_INLINE f32x8 exp_nonpositive(f32x8 x) {
  constexpr float kRound = 12582912.0f;  // 1.5·2^23
  const f32x8 t = x * 1.44269504088896341f + kRound;
  const f32x8 n = t - kRound;
  const f32x8 r = (x - n * 0.693359375f) + n * 2.12194440e-4f;  // ln2 = 0.693359375 - 2.12194440e-4
  f32x8 p = splat(1.0f / 5040);
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  uint32_t round_bits;
  std::memcpy(&round_bits, &kRound, sizeof round_bits);
  const f32x8 two_n = from_bits((to_bits(t) - round_bits + 127u) << 23);  // wraps for inf/NaN
  return x < -87.0f ? splat(0.0f) : p * two_n;
}

// tanh. |y| < 0.25: the odd Taylor series to y^9 (next term < 1e-8 relative); otherwise
// (1 - e)/(1 + e) with e = e^(-2|y|) <= 0.61, so the subtraction loses at most ~1.3 bits.
// ±inf give ±1; NaN stays NaN.
PG_VEC_INLINE f32x8 tanh(f32x8 y) {
  const u32x8 sign = to_bits(y) & 0x80000000u;
  const f32x8 a = from_bits(to_bits(y) & 0x7fffffffu);
  const f32x8 y2 = y * y;
  f32x8 s = splat(62.0f / 2835);
  s = s * y2 - 17.0f / 315;
  s = s * y2 + 2.0f / 15;
  s = s * y2 - 1.0f / 3;
  s = s * y2 + 1.0f;
  const f32x8 small = y * s;
  const f32x8 e = exp_nonpositive(-2.0f * a);
  const f32x8 large = from_bits(to_bits((1.0f - e) / (1.0f + e)) | sign);
  return a < 0.25f ? small : large;
}

// Lanes summed in lane order.
PG_VEC_INLINE double sum_lanes(f64x8 v) {
  double s = 0.0;
  for (int i = 0; i < kLanes; ++i) s += v[i];
  return s;
}

}  // namespace pg::cpu::simd
