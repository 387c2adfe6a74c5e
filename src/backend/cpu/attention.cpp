// Causal softmax attention with materialised probabilities.
// q, k, v, out, dq, dk, dv: [B,Tn,NH,hs]; head h of token t starts at ((b·Tn + t)·NH + h)·hs.
// probs: [B,NH,Tn,Tn], row (b,h,t) at ((b·NH + h)·Tn + t)·Tn, zero above the diagonal.
// The forward splits over the B·NH·Tn query rows; the backward over the B·NH (batch, head) pairs,
// since dk and dv of one pair collect contributions from all of its query rows.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/ops.hpp"
#include "backend/cpu/parallel.hpp"

namespace pg::cpu {
namespace {

template <typename T>
double dot(const T* a, const T* b, int n) {
  double s = 0.0;
  for (int i = 0; i < n; ++i) s += double(a[i]) * double(b[i]);
  return s;
}

}  // namespace

template <typename T>
void attention_fwd(T* out, T* probs, const T* q, const T* k, const T* v, int B, int Tn, int NH,
                   int hs, double scale) {
  const int64_t C = int64_t(NH) * hs;
  const int64_t rows = int64_t(B) * NH * Tn;
  parallel_for(
      rows,
      [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t t = r % Tn, bh = r / Tn, h = bh % NH, b = bh / NH;
          const int64_t tok0 = b * Tn;  // first token of this sequence
          const T* qt = q + (tok0 + t) * C + h * hs;
          T* p = probs + r * Tn;

          double mx = -INFINITY;
          for (int64_t s = 0; s <= t; ++s) {
            const double a = scale * dot(qt, k + (tok0 + s) * C + h * hs, hs);
            p[s] = T(a);
            mx = std::max(mx, double(p[s]));
          }
          double sum = 0.0;
          for (int64_t s = 0; s <= t; ++s) {
            const double e = std::exp(double(p[s]) - mx);
            p[s] = T(e);
            sum += e;
          }
          const double inv = 1.0 / sum;
          for (int64_t s = 0; s <= t; ++s) p[s] = T(double(p[s]) * inv);
          for (int64_t s = t + 1; s < Tn; ++s) p[s] = T(0);

          T* ot = out + (tok0 + t) * C + h * hs;
          for (int i = 0; i < hs; ++i) ot[i] = T(0);
          for (int64_t s = 0; s <= t; ++s) {
            const T* vs = v + (tok0 + s) * C + h * hs;
            const T ps = p[s];
            for (int i = 0; i < hs; ++i) ot[i] += ps * vs[i];
          }
        }
      },
      rows_per_chunk(int64_t(Tn) * hs * 2));
}

template <typename T>
void attention_bwd(Nullable<T> dq, Nullable<T> dk, Nullable<T> dv, const T* dout, const T* probs,
                   const T* q, const T* k, const T* v, int B, int Tn, int NH, int hs,
                   double scale) {
  const int64_t C = int64_t(NH) * hs;
  parallel_for(
      int64_t(B) * NH,
      [&](int64_t bh0, int64_t bh1) {
        std::vector<double> dA(static_cast<size_t>(Tn));
        for (int64_t bh = bh0; bh < bh1; ++bh) {
          const int64_t h = bh % NH, b = bh / NH;
          const int64_t tok0 = b * Tn;
          const int64_t off = h * hs;  // of this head within a token's C channels
          for (int64_t t = 0; t < Tn; ++t) {
            const T* p = probs + (bh * Tn + t) * Tn;
            const T* dout_t = dout + (tok0 + t) * C + off;
            // dP[s] = dout_t·v_s, then dA[s] = P[s]·(dP[s] - Σ_s' P[s']·dP[s'])
            double pdp = 0.0;
            for (int64_t s = 0; s <= t; ++s) {
              dA[size_t(s)] = dot(dout_t, v + (tok0 + s) * C + off, hs);
              pdp += double(p[s]) * dA[size_t(s)];
            }
            for (int64_t s = 0; s <= t; ++s) dA[size_t(s)] = double(p[s]) * (dA[size_t(s)] - pdp);

            const T* qt = q + (tok0 + t) * C + off;
            T* dqt = dq ? dq + (tok0 + t) * C + off : nullptr;
            for (int64_t s = 0; s <= t; ++s) {
              const int64_t so = (tok0 + s) * C + off;
              const T g = T(scale * dA[size_t(s)]);
              const T ps = p[s];
              for (int i = 0; i < hs; ++i) {
                if (dqt) dqt[i] += g * k[so + i];
                if (dk) dk[so + i] += g * qt[i];
                if (dv) dv[so + i] += ps * dout_t[i];
              }
            }
          }
        }
      },
      1);
}

template void attention_fwd<float>(float*, float*, const float*, const float*, const float*, int,
                                   int, int, int, double);
template void attention_fwd<double>(double*, double*, const double*, const double*, const double*,
                                    int, int, int, int, double);
template void attention_bwd<float>(float*, float*, float*, const float*, const float*, const float*,
                                   const float*, const float*, int, int, int, int, double);
template void attention_bwd<double>(double*, double*, double*, const double*, const double*,
                                    const double*, const double*, const double*, int, int, int, int,
                                    double);

}  // namespace pg::cpu
