// Small helpers shared by the CPU op tests: seeded random arrays, dot products, relative
// differences, and gradient buffers pre-filled with noise (to check that backwards accumulate).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/rng.hpp"

namespace pg::test {

using Vec = std::vector<double>;

inline Vec randn(Rng& rng, int64_t n, double scale = 1.0) {
  Vec v(static_cast<size_t>(n));
  for (auto& x : v) x = scale * rng.normal();
  return v;
}

// Uniform magnitude in [lo, hi] with a random sign: inputs that keep clear of 0 (and of kinks).
inline Vec rand_away_from_zero(Rng& rng, int64_t n, double lo = 0.1, double hi = 2.0) {
  Vec v(static_cast<size_t>(n));
  for (auto& x : v) x = (rng.below(2) ? 1.0 : -1.0) * rng.uniform(lo, hi);
  return v;
}

inline std::vector<int32_t> rand_ints(Rng& rng, int64_t n, int32_t upper) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = int32_t(rng.below(uint64_t(upper)));
  return v;
}

inline double dot(const Vec& a, const Vec& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// ‖a − b‖ / max(‖a‖, ‖b‖, 1e-300) for arrays of any two element types.
template <typename A, typename B>
double rel_diff(const std::vector<A>& a, const std::vector<B>& b) {
  double d2 = 0.0, a2 = 0.0, b2 = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double x = double(a[i]), y = double(b[i]);
    d2 += (x - y) * (x - y);
    a2 += x * x;
    b2 += y * y;
  }
  return std::sqrt(d2) / std::max({std::sqrt(a2), std::sqrt(b2), 1e-300});
}

inline double max_abs_diff(const Vec& a, const Vec& b) {
  double m = 0.0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

template <typename T>
std::vector<T> cast(const Vec& v) {
  return std::vector<T>(v.begin(), v.end());
}

// A gradient buffer that starts as random noise; added() is what a backward put on top of it.
struct AccumGrad {
  Vec start, buf;
  AccumGrad(Rng& rng, int64_t n) : start(randn(rng, n)), buf(start) {}
  double* data() { return buf.data(); }
  Vec added() const {
    Vec d(buf.size());
    for (size_t i = 0; i < d.size(); ++i) d[i] = buf[i] - start[i];
    return d;
  }
};

}  // namespace pg::test
