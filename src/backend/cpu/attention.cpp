// Causal softmax attention with materialised probabilities.
// q, k, v, out, dq, dk, dv: [B,Tn,NH,hs]; head h of token t starts at ((b·Tn + t)·NH + h)·hs.
// probs: [B,NH,Tn,Tn], row (b,h,t) at ((b·NH + h)·Tn + t)·Tn, zero above the diagonal.
// Both passes split over the B·NH (batch, head) pairs and do each pair's products as GEMMs on one
// thread (a head's rows are strided by C = NH·hs):
//   forward   S = scale·Q·Kᵀ, P = softmax(S masked to s <= t), O = P·V
//   backward  dP = dO·Vᵀ, dS = P∘(dP - rowsum(P∘dP)), dQ += scale·dS·K, dK += scale·dSᵀ·Q,
//             dV += Pᵀ·dO
// A pair's work never depends on the thread count, so neither do the results.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/blas.hpp"
#include "backend/cpu/ops.hpp"
#include "backend/cpu/parallel.hpp"

namespace pg::cpu {

template <typename T>
void attention_fwd(T* out, T* probs, const T* q, const T* k, const T* v, int B, int Tn, int NH,
                   int hs, double scale) {
  ensure_single_threaded_blas();
  const int C = NH * hs;
  parallel_for(
      int64_t(B) * NH,
      [&](int64_t bh0, int64_t bh1) {
        for (int64_t bh = bh0; bh < bh1; ++bh) {
          const int64_t h = bh % NH, b = bh / NH;
          const int64_t off = b * Tn * C + h * hs;  // this head's first row in q, k, v, out
          T* P = probs + bh * Tn * Tn;
          dense::gemm(false, true, Tn, Tn, hs, T(scale), q + off, C, k + off, C, T(0), P, Tn);
          for (int64_t t = 0; t < Tn; ++t) {
            T* p = P + t * Tn;
            double mx = -INFINITY;
            for (int64_t s = 0; s <= t; ++s) mx = std::max(mx, double(p[s]));
            double sum = 0.0;
            for (int64_t s = 0; s <= t; ++s) {
              const double e = std::exp(double(p[s]) - mx);
              p[s] = T(e);
              sum += e;
            }
            const double inv = 1.0 / sum;
            for (int64_t s = 0; s <= t; ++s) p[s] = T(double(p[s]) * inv);
            std::fill(p + t + 1, p + Tn, T(0));
          }
          dense::gemm(false, false, Tn, hs, Tn, T(1), P, Tn, v + off, C, T(0), out + off, C);
        }
      },
      1);
}

template <typename T>
void attention_bwd(Nullable<T> dq, Nullable<T> dk, Nullable<T> dv, const T* dout, const T* probs,
                   const T* q, const T* k, const T* v, int B, int Tn, int NH, int hs,
                   double scale) {
  ensure_single_threaded_blas();
  const int C = NH * hs;
  parallel_for(
      int64_t(B) * NH,
      [&](int64_t bh0, int64_t bh1) {
        std::vector<T> dS(size_t(Tn) * size_t(Tn));
        for (int64_t bh = bh0; bh < bh1; ++bh) {
          const int64_t h = bh % NH, b = bh / NH;
          const int64_t off = b * Tn * C + h * hs;
          const T* P = probs + bh * Tn * Tn;
          if (dv) dense::gemm(true, false, Tn, hs, Tn, T(1), P, Tn, dout + off, C, T(1), dv + off, C);
          if (!dq && !dk) continue;
          dense::gemm(false, true, Tn, Tn, hs, T(1), dout + off, C, v + off, C, T(0), dS.data(), Tn);
          for (int64_t t = 0; t < Tn; ++t) {
            const T* p = P + t * Tn;
            T* d = dS.data() + t * Tn;
            double pdp = 0.0;
            for (int64_t s = 0; s <= t; ++s) pdp += double(p[s]) * double(d[s]);
            for (int64_t s = 0; s <= t; ++s) d[s] = T(double(p[s]) * (double(d[s]) - pdp));
            std::fill(d + t + 1, d + Tn, T(0));
          }
          if (dq) dense::gemm(false, false, Tn, hs, Tn, T(scale), dS.data(), Tn, k + off, C, T(1), dq + off, C);
          if (dk) dense::gemm(true, false, Tn, hs, Tn, T(scale), dS.data(), Tn, q + off, C, T(1), dk + off, C);
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
