// Pointwise ops: GELU (tanh form), ReLU², the logit soft cap, axpy and add. Each element is
// computed on its own, so the split over threads cannot change a result.
#include <algorithm>
#include <cmath>

#include "backend/cpu/ops.hpp"
#include "backend/cpu/parallel.hpp"

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
    const T grad = T(0.5) * (T(1) + th) + T(0.5) * x * (T(1) - th * th) * s * (T(1) + T(3) * a * x * x);
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

#define PG_INSTANTIATE(T)                                              \
  template void gelu_fwd<T>(T*, const T*, int64_t);                    \
  template void gelu_bwd<T>(T*, const T*, const T*, int64_t);          \
  template void relu2_fwd<T>(T*, const T*, int64_t);                   \
  template void relu2_bwd<T>(T*, const T*, const T*, int64_t);         \
  template void softcap_fwd<T>(T*, const T*, int64_t, double);         \
  template void softcap_bwd<T>(T*, const T*, const T*, int64_t, double); \
  template void axpy<T>(T*, const T*, T, int64_t);                     \
  template void add<T>(T*, const T*, const T*, int64_t);
PG_INSTANTIATE(float)
PG_INSTANTIATE(double)
#undef PG_INSTANTIATE

}  // namespace pg::cpu
