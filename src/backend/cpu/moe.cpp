// Mixture-of-Experts ops (moe_ops.hpp): routing, router losses, dispatch, grouped matmul, combine.
// Row loops split tokens over the pool; every output row is computed by one thread in a fixed
// order, and the only cross-token sums (P_e of the aux loss, the z-loss mean) run serially or
// split by expert, so results are bit-identical for any thread count.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/moe_ops.hpp"
#include "backend/cpu/parallel.hpp"
#include "core/error.hpp"

namespace pg::cpu {

template <typename T>
void router_fwd(T* probs, T* lse, int32_t* sel, T* gates, const T* logits,
                Nullable<const T> score_bias, int N, int E, int k) {
  PG_CHECK(k >= 1 && k <= E, "router_fwd: top_k must be in [1, n_expert]");
  parallel_for(
      N,
      [&](int64_t n0, int64_t n1) {
        std::vector<T> score(static_cast<size_t>(E));
        for (int64_t n = n0; n < n1; ++n) {
          const T* z = logits + n * E;
          T* p = probs + n * E;
          T mx = z[0];
          for (int e = 1; e < E; ++e) mx = std::max(mx, z[e]);
          double sum = 0.0;
          for (int e = 0; e < E; ++e) sum += std::exp(double(z[e] - mx));
          for (int e = 0; e < E; ++e) p[e] = T(std::exp(double(z[e] - mx)) / sum);
          lse[n] = T(double(mx) + std::log(sum));
          for (int e = 0; e < E; ++e) score[size_t(e)] = score_bias ? p[e] + score_bias[e] : p[e];
          // k passes of argmax over the unchosen experts; strict > keeps the lowest index on ties.
          int32_t* s = sel + n * k;
          double chosen = 0.0;
          for (int j = 0; j < k; ++j) {
            int best = -1;
            for (int e = 0; e < E; ++e) {
              if (std::find(s, s + j, e) != s + j) continue;
              if (best < 0 || score[size_t(e)] > score[size_t(best)]) best = e;
            }
            s[j] = best;
            chosen += double(p[best]);
          }
          for (int j = 0; j < k; ++j) gates[n * k + j] = T(double(p[s[j]]) / chosen);
        }
      },
      rows_per_chunk(int64_t(E) * (k + 4)));
}

template <typename T>
void router_gates_bwd(T* dlogits, const T* dgates, const T* gates, const int32_t* sel, int N, int E,
                      int k) {
  parallel_for(
      N,
      [&](int64_t n0, int64_t n1) {
        for (int64_t n = n0; n < n1; ++n) {
          const T* g = gates + n * k;
          const T* dg = dgates + n * k;
          double gdg = 0.0;
          for (int j = 0; j < k; ++j) gdg += double(g[j]) * double(dg[j]);
          for (int j = 0; j < k; ++j)
            dlogits[n * E + sel[n * k + j]] += T(double(g[j]) * (double(dg[j]) - gdg));
        }
      },
      rows_per_chunk(4 * k));
}

template <typename T>
double router_aux_loss_fwd(const T* probs, const int64_t* counts, int N, int E, int k) {
  double aux = 0.0;
  for (int e = 0; e < E; ++e) {
    double P = 0.0;
    for (int64_t n = 0; n < N; ++n) P += double(probs[n * E + e]);
    aux += double(counts[e]) / (double(N) * k) * (P / N);
  }
  return E * aux;
}

template <typename T>
void router_aux_loss_bwd(T* dlogits, const T* probs, const int64_t* counts, int N, int E, int k,
                         double scale) {
  // dprobs[n,e] = scale · E · f_e / N, the same for every token.
  std::vector<double> dp(static_cast<size_t>(E));
  for (int e = 0; e < E; ++e) dp[size_t(e)] = scale * E * (double(counts[e]) / (double(N) * k)) / N;
  parallel_for(
      N,
      [&](int64_t n0, int64_t n1) {
        for (int64_t n = n0; n < n1; ++n) {
          const T* p = probs + n * E;
          double pdp = 0.0;
          for (int e = 0; e < E; ++e) pdp += double(p[e]) * dp[size_t(e)];
          for (int e = 0; e < E; ++e) dlogits[n * E + e] += T(double(p[e]) * (dp[size_t(e)] - pdp));
        }
      },
      rows_per_chunk(2 * E));
}

template <typename T>
double router_z_loss_fwd(const T* lse, int N) {
  double z = 0.0;
  for (int64_t n = 0; n < N; ++n) z += double(lse[n]) * double(lse[n]);
  return z / N;
}

template <typename T>
void router_z_loss_bwd(T* dlogits, const T* probs, const T* lse, int N, int E, double scale) {
  parallel_for(
      N,
      [&](int64_t n0, int64_t n1) {
        for (int64_t n = n0; n < n1; ++n) {
          const double c = scale * 2.0 * double(lse[n]) / N;
          for (int e = 0; e < E; ++e) dlogits[n * E + e] += T(c * double(probs[n * E + e]));
        }
      },
      rows_per_chunk(E));
}

int64_t moe_dispatch_plan(int32_t* slot, int32_t* row_token, int64_t* begin, int64_t* counts,
                          const int32_t* sel, int N, int E, int k, int64_t capacity) {
  PG_CHECK(capacity >= 0, "moe_dispatch_plan: negative capacity");
  std::fill(counts, counts + E, int64_t(0));
  for (int64_t i = 0; i < int64_t(N) * k; ++i) {
    PG_CHECK(sel[i] >= 0 && sel[i] < E, "moe_dispatch_plan: expert id out of range");
    ++counts[sel[i]];
  }
  begin[0] = 0;
  for (int e = 0; e < E; ++e) begin[e + 1] = begin[e] + std::min(counts[e], capacity);
  // Counting sort by (expert, choice rank, token): the rank-major fill is the capacity priority.
  std::vector<int64_t> fill(static_cast<size_t>(E), 0);
  for (int j = 0; j < k; ++j)
    for (int n = 0; n < N; ++n) {
      const int e = sel[int64_t(n) * k + j];
      const int64_t pos = fill[size_t(e)]++;
      if (pos < capacity) {
        const int64_t r = begin[e] + pos;
        slot[int64_t(n) * k + j] = int32_t(r);
        row_token[r] = n;
      } else {
        slot[int64_t(n) * k + j] = -1;
      }
    }
  return begin[E];
}

template <typename T>
void moe_gather(T* xe, const T* x, const int32_t* row_token, int64_t R, int C) {
  parallel_for(
      R,
      [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) std::copy(x + int64_t(row_token[r]) * C, x + int64_t(row_token[r] + 1) * C, xe + r * C);
      },
      rows_per_chunk(C));
}

template <typename T>
void moe_scatter_add(T* dx, const T* dxe, const int32_t* slot, int N, int k, int C) {
  parallel_for(
      N,
      [&](int64_t n0, int64_t n1) {
        for (int64_t n = n0; n < n1; ++n)
          for (int j = 0; j < k; ++j) {
            const int32_t r = slot[n * k + j];
            if (r < 0) continue;
            const T* src = dxe + int64_t(r) * C;
            T* dst = dx + n * C;
            for (int c = 0; c < C; ++c) dst[c] += src[c];
          }
      },
      rows_per_chunk(int64_t(k) * C));
}

template <typename T>
void moe_combine_fwd(T* y, const T* eo, const T* gates, const int32_t* slot, int N, int k, int C) {
  parallel_for(
      N,
      [&](int64_t n0, int64_t n1) {
        for (int64_t n = n0; n < n1; ++n) {
          T* out = y + n * C;
          std::fill(out, out + C, T(0));
          for (int j = 0; j < k; ++j) {
            const int32_t r = slot[n * k + j];
            if (r < 0) continue;
            const T g = gates[n * k + j];
            const T* src = eo + int64_t(r) * C;
            for (int c = 0; c < C; ++c) out[c] += g * src[c];
          }
        }
      },
      rows_per_chunk(int64_t(k) * C));
}

template <typename T>
void moe_combine_bwd(T* deo, T* dgates, const T* dy, const T* eo, const T* gates,
                     const int32_t* slot, int N, int k, int C) {
  parallel_for(
      N,
      [&](int64_t n0, int64_t n1) {
        for (int64_t n = n0; n < n1; ++n) {
          const T* d = dy + n * C;
          for (int j = 0; j < k; ++j) {
            const int32_t r = slot[n * k + j];
            if (r < 0) {
              dgates[n * k + j] = T(0);
              continue;
            }
            const T g = gates[n * k + j];
            const T* src = eo + int64_t(r) * C;
            T* dst = deo + int64_t(r) * C;
            double dot = 0.0;
            for (int c = 0; c < C; ++c) {
              dot += double(d[c]) * double(src[c]);
              dst[c] = g * d[c];
            }
            dgates[n * k + j] = T(dot);
          }
        }
      },
      rows_per_chunk(int64_t(k) * C));
}

// One matmul per group on its row block: each is parallel over its own rows internally, and the
// groups run in order, so nothing depends on the thread count.
template <typename T>
void grouped_matmul_fwd(T* out, const T* inp, const T* w, Nullable<const T> bias,
                        const int64_t* begin, int G, int IC, int OC) {
  for (int g = 0; g < G; ++g) {
    const int64_t r0 = begin[g], rows = begin[g + 1] - r0;
    if (rows == 0) continue;
    matmul_fwd(out + r0 * OC, inp + r0 * IC, w + int64_t(g) * OC * IC,
               bias ? bias + int64_t(g) * OC : nullptr, int(rows), IC, OC);
  }
}

template <typename T>
void grouped_matmul_bwd(Nullable<T> dinp, Nullable<T> dw, Nullable<T> dbias, const T* dout,
                        const T* inp, const T* w, const int64_t* begin, int G, int IC, int OC) {
  for (int g = 0; g < G; ++g) {
    const int64_t r0 = begin[g], rows = begin[g + 1] - r0;
    if (rows == 0) continue;
    matmul_bwd(dinp ? dinp + r0 * IC : nullptr, dw ? dw + int64_t(g) * OC * IC : nullptr,
               dbias ? dbias + int64_t(g) * OC : nullptr, dout + r0 * OC, inp + r0 * IC,
               w + int64_t(g) * OC * IC, int(rows), IC, OC);
  }
}

#define PG_MOE_INSTANTIATE(T)                                                                     \
  template void router_fwd<T>(T*, T*, int32_t*, T*, const T*, const T*, int, int, int);          \
  template void router_gates_bwd<T>(T*, const T*, const T*, const int32_t*, int, int, int);      \
  template double router_aux_loss_fwd<T>(const T*, const int64_t*, int, int, int);               \
  template void router_aux_loss_bwd<T>(T*, const T*, const int64_t*, int, int, int, double);     \
  template double router_z_loss_fwd<T>(const T*, int);                                           \
  template void router_z_loss_bwd<T>(T*, const T*, const T*, int, int, double);                  \
  template void moe_gather<T>(T*, const T*, const int32_t*, int64_t, int);                       \
  template void moe_scatter_add<T>(T*, const T*, const int32_t*, int, int, int);                 \
  template void moe_combine_fwd<T>(T*, const T*, const T*, const int32_t*, int, int, int);       \
  template void moe_combine_bwd<T>(T*, T*, const T*, const T*, const T*, const int32_t*, int,    \
                                   int, int);                                                    \
  template void grouped_matmul_fwd<T>(T*, const T*, const T*, const T*, const int64_t*, int, int, \
                                      int);                                                      \
  template void grouped_matmul_bwd<T>(T*, T*, T*, const T*, const T*, const T*, const int64_t*,   \
                                      int, int, int);
PG_MOE_INSTANTIATE(float)
PG_MOE_INSTANTIATE(double)
#undef PG_MOE_INSTANTIATE

}  // namespace pg::cpu
