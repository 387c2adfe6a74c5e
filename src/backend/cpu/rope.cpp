// Rotary position embedding on x[B,Tn,NH,hs], in place. Pair i (i < hs/2) of every head is
// (x[i], x[i + hs/2]) (the rotate-half pairing, as in GPT-NeoX), rotated at position t by
// t·theta^(-2i/hs). The cos/sin table [Tn, hs/2] is built once per call, in double.
#include <cmath>
#include <vector>

#include "backend/cpu/ops.hpp"
#include "backend/cpu/parallel.hpp"
#include "core/error.hpp"

namespace pg::cpu {
namespace {

// sign = +1 rotates by +angle (forward), -1 by -angle (the transpose, for backward).
template <typename T>
void rope_rotate(T* x, int B, int Tn, int NH, int hs, double theta, double sign) {
  PG_CHECK(hs % 2 == 0, "rope: head size must be even");
  const int half = hs / 2;
  std::vector<double> cs(size_t(Tn) * half), sn(size_t(Tn) * half);
  for (int t = 0; t < Tn; ++t) {
    for (int i = 0; i < half; ++i) {
      const double angle = t * std::pow(theta, -2.0 * i / hs);
      cs[size_t(t) * half + i] = std::cos(angle);
      sn[size_t(t) * half + i] = sign * std::sin(angle);
    }
  }
  const int64_t rows = int64_t(B) * Tn;  // each row is [NH, hs] at one position
  parallel_for(
      rows,
      [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const size_t t = size_t(r % Tn);
          const double* c = cs.data() + t * half;
          const double* s = sn.data() + t * half;
          for (int h = 0; h < NH; ++h) {
            T* head = x + (r * NH + h) * hs;
            for (int i = 0; i < half; ++i) {
              const double a = head[i], b = head[i + half];
              head[i] = T(a * c[i] - b * s[i]);
              head[i + half] = T(a * s[i] + b * c[i]);
            }
          }
        }
      },
      rows_per_chunk(int64_t(NH) * hs * 3));
}

}  // namespace

template <typename T>
void rope_fwd(T* x, int B, int Tn, int NH, int hs, double theta) {
  rope_rotate(x, B, Tn, NH, hs, theta, +1.0);
}

template <typename T>
void rope_bwd(T* dx, int B, int Tn, int NH, int hs, double theta) {
  rope_rotate(dx, B, Tn, NH, hs, theta, -1.0);
}

template void rope_fwd<float>(float*, int, int, int, int, double);
template void rope_fwd<double>(double*, int, int, int, int, double);
template void rope_bwd<float>(float*, int, int, int, int, double);
template void rope_bwd<double>(double*, int, int, int, int, double);

}  // namespace pg::cpu
