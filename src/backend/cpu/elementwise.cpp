// Pointwise ops: GELU (tanh form), ReLU², the logit soft cap, axpy and add. Each element is
// computed on its own, so the split over threads cannot change a result. The tanh-based forwards
// and GELU's backward have fp32 versions on the 8-lane vectors of simd.hpp: with scalar tanhf,
// GELU over [2048, 512] took 22 ms and the soft cap over [2048, 50257] 1.2 s on 2 cores (now
// 0.6 ms and 35 ms, AVX-512). T = double keeps std::tanh.
#include <algorithm>
#include <cmath>

#include "backend/cpu/ops.hpp"
#include "backend/cpu/parallel.hpp"
#include "backend/cpu/simd.hpp"

namespace pg::cpu {
namespace {

constexpr int64_t kElemChunk = int64_t(1) << 15;

template <typename F>
void for_each_index(int64_t n, const F& f) {
  parallel_for(
      n,
      [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) f(i);
      },
      kElemChunk);
}

constexpr double kGeluS = 0.7978845608028654;  // sqrt(2/π)
constexpr double kGeluA = 0.044715;

}  // namespace

template <typename T>
void gelu_fwd(T* out, const T* inp, int64_t n) {
  const T s = T(kGeluS), a = T(kGeluA);
  for_each_index(n, [&](int64_t i) {
    const T x = inp[i];
    out[i] = T(0.5) * x * (T(1) + std::tanh(s * (x + a * x * x * x)));
  });
}

// d/dx 0.5x(1+tanh u), u = s(x + a x³):  0.5(1+tanh u) + 0.5x(1-tanh²u)·s(1 + 3a x²)
template <typename T>
void gelu_bwd(T* dinp, const T* dout, const T* inp, int64_t n) {
  const T s = T(kGeluS), a = T(kGeluA);
  for_each_index(n, [&](int64_t i) {
    const T x = inp[i];
    const T th = std::tanh(s * (x + a * x * x * x));
    const T grad =
        T(0.5) * (T(1) + th) + T(0.5) * x * (T(1) - th * th) * s * (T(1) + T(3) * a * x * x);
    dinp[i] += dout[i] * grad;
  });
}

template <typename T>
void relu2_fwd(T* out, const T* inp, int64_t n) {
  for_each_index(n, [&](int64_t i) {
    const T r = std::max(inp[i], T(0));
    out[i] = r * r;
  });
}

template <typename T>
void relu2_bwd(T* dinp, const T* dout, const T* inp, int64_t n) {
  for_each_index(n, [&](int64_t i) { dinp[i] += dout[i] * T(2) * std::max(inp[i], T(0)); });
}

template <typename T>
void softcap_fwd(T* out, const T* inp, int64_t n, double cap) {
  const T c = T(cap), inv = T(1.0 / cap);
  for_each_index(n, [&](int64_t i) { out[i] = c * std::tanh(inp[i] * inv); });
}

template <typename T>
void softcap_bwd(T* dinp, const T* dout, const T* out, int64_t n, double cap) {
  const T inv = T(1.0 / cap);
  for_each_index(n, [&](int64_t i) {
    const T y = out[i] * inv;
    dinp[i] = dout[i] * (T(1) - y * y);
  });
}

template <typename T>
void axpy(T* y, const T* x, T a, int64_t n) {
  for_each_index(n, [&](int64_t i) { y[i] += a * x[i]; });
}

template <typename T>
void add(T* out, const T* a, const T* b, int64_t n) {
  for_each_index(n, [&](int64_t i) { out[i] = a[i] + b[i]; });
}

// ---- fp32 versions of the tanh-based ops -------------------------------------------------------

namespace {

using simd::f32x8;

PG_VEC_INLINE f32x8 gelu_vec(f32x8 x) {
  return 0.5f * x * (1.0f + simd::tanh(float(kGeluS) * (x + float(kGeluA) * x * x * x)));
}

PG_VEC_INLINE f32x8 gelu_grad_vec(f32x8 x) {
  const f32x8 th = simd::tanh(float(kGeluS) * (x + float(kGeluA) * x * x * x));
  return 0.5f * (1.0f + th) +
         0.5f * x * (1.0f - th * th) * float(kGeluS) * (1.0f + float(3 * kGeluA) * x * x);
}

PG_SIMD_CLONES
void gelu_fwd_f32(float* out, const float* inp, int64_t n) {
  int64_t i = 0;
  for (; i + simd::kLanes <= n; i += simd::kLanes)
    simd::store(out + i, gelu_vec(simd::load(inp + i)));
  if (i < n) simd::store_tail(out + i, gelu_vec(simd::load_tail(inp + i, n - i, 0.0f)), n - i);
}

PG_SIMD_CLONES
void gelu_bwd_f32(float* dinp, const float* dout, const float* inp, int64_t n) {
  int64_t i = 0;
  for (; i + simd::kLanes <= n; i += simd::kLanes) {
    const f32x8 g = simd::load(dout + i) * gelu_grad_vec(simd::load(inp + i));
    simd::store(dinp + i, simd::load(dinp + i) + g);
  }
  if (i < n) {
    const int64_t r = n - i;
    const f32x8 g =
        simd::load_tail(dout + i, r, 0.0f) * gelu_grad_vec(simd::load_tail(inp + i, r, 0.0f));
    simd::store_tail(dinp + i, simd::load_tail(dinp + i, r, 0.0f) + g, r);
  }
}

PG_SIMD_CLONES
void softcap_fwd_f32(float* out, const float* inp, int64_t n, float cap) {
  const float inv = 1.0f / cap;
  int64_t i = 0;
  for (; i + simd::kLanes <= n; i += simd::kLanes)
    simd::store(out + i, cap * simd::tanh(simd::load(inp + i) * inv));
  if (i < n)
    simd::store_tail(out + i, cap * simd::tanh(simd::load_tail(inp + i, n - i, 0.0f) * inv), n - i);
}

}  // namespace

template <>
void gelu_fwd<float>(float* out, const float* inp, int64_t n) {
  parallel_for(
      n, [&](int64_t i0, int64_t i1) { gelu_fwd_f32(out + i0, inp + i0, i1 - i0); }, kElemChunk);
}

template <>
void gelu_bwd<float>(float* dinp, const float* dout, const float* inp, int64_t n) {
  parallel_for(
      n, [&](int64_t i0, int64_t i1) { gelu_bwd_f32(dinp + i0, dout + i0, inp + i0, i1 - i0); },
      kElemChunk);
}

template <>
void softcap_fwd<float>(float* out, const float* inp, int64_t n, double cap) {
  parallel_for(
      n, [&](int64_t i0, int64_t i1) { softcap_fwd_f32(out + i0, inp + i0, i1 - i0, float(cap)); },
      kElemChunk);
}

template void gelu_fwd<double>(double*, const double*, int64_t);
template void gelu_bwd<double>(double*, const double*, const double*, int64_t);
template void softcap_fwd<double>(double*, const double*, int64_t, double);

#define PG_INSTANTIATE(T)                                                \
  template void relu2_fwd<T>(T*, const T*, int64_t);                     \
  template void relu2_bwd<T>(T*, const T*, const T*, int64_t);           \
  template void softcap_bwd<T>(T*, const T*, const T*, int64_t, double); \
  template void axpy<T>(T*, const T*, T, int64_t);                       \
  template void add<T>(T*, const T*, const T*, int64_t);
PG_INSTANTIATE(float)
PG_INSTANTIATE(double)
#undef PG_INSTANTIATE

}  // namespace pg::cpu
