// Newton-Schulz iteration on the CPU (float with bf16/fp16 emulation, and float64); the math and
// the emulated rounding points are in newton_schulz.hpp.
#include "optim/newton_schulz.hpp"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "core/error.hpp"
#include "optim/dense.hpp"
#include "optim/low_precision.hpp"

namespace pg {
namespace {

template <class T>
struct NoRounding {
  T operator()(T x) const { return x; }
};
struct Bf16Rounding {
  float operator()(float x) const { return round_to_bf16(x); }
};
struct Fp16Rounding {
  float operator()(float x) const { return round_to_fp16(x); }
};

template <class T, class Round>
void round_all(T* x, size_t n, Round rnd) {
  if constexpr (!std::is_same_v<Round, NoRounding<T>>)
    for (size_t i = 0; i < n; ++i) x[i] = rnd(x[i]);
}

// Scratch for one m x n (m <= n) matrix: A = XX^T, B = bA + cA^2 (m x m), Y (m x n) the next X.
template <class T>
struct NsScratch {
  std::vector<T> A, B, Y;
  NsScratch(int m, int n) : A(size_t(m) * m), B(size_t(m) * m), Y(size_t(m) * n) {}
};

// X (m x n, m <= n) in place.
template <class T, class Round>
void ns_wide(T* X, int m, int n, std::span<const NsCoeffs> schedule, double safety, double eps,
             Round rnd, NsScratch<T>& s) {
  const size_t mn = size_t(m) * n, mm = size_t(m) * m;
  const double norm = dense::frobenius_norm(X, mn);
  const T scale = T(1.0 / (norm * safety + eps));
  for (size_t i = 0; i < mn; ++i) X[i] = rnd(X[i] * scale);

  T* x = X;
  T* y = s.Y.data();
  T* A = s.A.data();
  T* B = s.B.data();
  for (const NsCoeffs& k : schedule) {
    // A = X X^T
    dense::syrk(false, m, n, T(1), x, n, T(0), A, m);
    dense::mirror_upper(A, m);
    round_all(A, mm, rnd);
    // B = c A A + b A   (A symmetric, so A A = A A^T)
    std::copy(A, A + mm, B);
    dense::syrk(false, m, m, T(k.c), A, m, T(k.b), B, m);
    dense::mirror_upper(B, m);
    round_all(B, mm, rnd);
    // X <- B X + a X
    for (size_t i = 0; i < mn; ++i) y[i] = T(k.a) * x[i];
    dense::gemm(false, false, m, n, m, T(1), B, m, x, n, T(1), y, n);
    round_all(y, mn, rnd);
    std::swap(x, y);
  }
  if (x != X) std::copy(x, x + mn, X);
}

template <class T, class Round>
void ns_batch(T* X, int batch, int rows, int cols, std::span<const NsCoeffs> schedule, double safety,
              double eps, Round rnd) {
  PG_CHECK(batch >= 0 && rows >= 0 && cols >= 0, "newton_schulz_cpu: negative size");
  if (batch == 0 || rows == 0 || cols == 0) return;
  const bool tall = rows > cols;
  const int m = tall ? cols : rows, n = tall ? rows : cols;
  const size_t mn = size_t(m) * n;
  NsScratch<T> scratch(m, n);
  std::vector<T> wide(tall ? mn : 0);
  for (int b = 0; b < batch; ++b) {
    T* Xb = X + size_t(b) * mn;
    if (!tall) {
      ns_wide(Xb, m, n, schedule, safety, eps, rnd, scratch);
    } else {
      dense::transpose(Xb, rows, cols, wide.data());
      ns_wide(wide.data(), m, n, schedule, safety, eps, rnd, scratch);
      dense::transpose(wide.data(), m, n, Xb);
    }
  }
}

}  // namespace

void newton_schulz_cpu(float* X, int batch, int rows, int cols, std::span<const NsCoeffs> schedule,
                       NsPrecision prec, double safety, double eps) {
  switch (prec) {
    case NsPrecision::fp32: return ns_batch(X, batch, rows, cols, schedule, safety, eps, NoRounding<float>{});
    case NsPrecision::bf16: return ns_batch(X, batch, rows, cols, schedule, safety, eps, Bf16Rounding{});
    case NsPrecision::fp16: return ns_batch(X, batch, rows, cols, schedule, safety, eps, Fp16Rounding{});
  }
}

void newton_schulz_cpu(double* X, int batch, int rows, int cols, std::span<const NsCoeffs> schedule,
                       double safety, double eps) {
  ns_batch(X, batch, rows, cols, schedule, safety, eps, NoRounding<double>{});
}

}  // namespace pg
