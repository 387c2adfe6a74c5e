// LayerNorm and RMSNorm over the last dim of [N,C], forward and backward. Row statistics are
// accumulated in double. The input gradient is split over rows; the gain/bias gradients, which
// sum over rows, are a second pass split over columns, each column summed in row order.
#include <cmath>
#include <vector>

#include "backend/cpu/ops.hpp"
#include "backend/cpu/parallel.hpp"
#include "core/error.hpp"

namespace pg::cpu {
namespace {

// dgain[c] += Σ_r dout[r,c]·xhat[r,c] and dbias[c] += Σ_r dout[r,c], xhat(r, c) given by the
// caller; either output may be null.
template <typename T, typename Xhat>
void norm_param_grads(T* dgain, T* dbias, const T* dout, int N, int C, const Xhat& xhat) {
  if (!dgain && !dbias) return;
  parallel_for(
      C,
      [&](int64_t c0, int64_t c1) {
        const size_t w = size_t(c1 - c0);
        std::vector<double> g(dgain ? w : 0, 0.0), b(dbias ? w : 0, 0.0);
        for (int64_t r = 0; r < N; ++r) {
          const T* d = dout + r * C;
          for (int64_t c = c0; c < c1; ++c) {
            if (dgain) g[size_t(c - c0)] += double(d[c]) * xhat(r, c);
            if (dbias) b[size_t(c - c0)] += double(d[c]);
          }
        }
        for (int64_t c = c0; c < c1; ++c) {
          if (dgain) dgain[c] += T(g[size_t(c - c0)]);
          if (dbias) dbias[c] += T(b[size_t(c - c0)]);
        }
      },
      rows_per_chunk(int64_t(N) * 2));
}

}  // namespace

template <typename T>
void layernorm_fwd(T* out, T* mean, T* rstd, const T* inp, const T* gain, Nullable<const T> bias,
                   int N, int C, double eps) {
  PG_CHECK(gain != nullptr, "layernorm_fwd: gain is required");
  parallel_for(
      N,
      [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const T* x = inp + r * C;
          double s = 0.0;
          for (int c = 0; c < C; ++c) s += double(x[c]);
          const double m = s / C;
          double v = 0.0;
          for (int c = 0; c < C; ++c) v += (double(x[c]) - m) * (double(x[c]) - m);
          const double rs = 1.0 / std::sqrt(v / C + eps);
          T* o = out + r * C;
          for (int c = 0; c < C; ++c) {
            const double y = (double(x[c]) - m) * rs * double(gain[c]);
            o[c] = T(bias ? y + double(bias[c]) : y);
          }
          mean[r] = T(m);
          rstd[r] = T(rs);
        }
      },
      rows_per_chunk(int64_t(C) * 4));
}

template <typename T>
void layernorm_bwd(Nullable<T> dinp, Nullable<T> dgain, Nullable<T> dbias, const T* dout,
                   const T* inp, const T* gain, const T* mean, const T* rstd, int N, int C) {
  if (dinp) {
    parallel_for(
        N,
        [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) {
            const T* x = inp + r * C;
            const T* d = dout + r * C;
            const double m = mean[r], rs = rstd[r];
            double g_mean = 0.0, gx_mean = 0.0;  // mean(g), mean(g·xhat)
            for (int c = 0; c < C; ++c) {
              const double g = double(d[c]) * double(gain[c]);
              g_mean += g;
              gx_mean += g * (double(x[c]) - m) * rs;
            }
            g_mean /= C;
            gx_mean /= C;
            T* dx = dinp + r * C;
            for (int c = 0; c < C; ++c) {
              const double g = double(d[c]) * double(gain[c]);
              const double xhat = (double(x[c]) - m) * rs;
              dx[c] += T(rs * (g - g_mean - xhat * gx_mean));
            }
          }
        },
        rows_per_chunk(int64_t(C) * 6));
  }
  norm_param_grads(dgain, dbias, dout, N, C, [&](int64_t r, int64_t c) {
    return (double(inp[r * C + c]) - double(mean[r])) * double(rstd[r]);
  });
}

template <typename T>
void rmsnorm_fwd(T* out, T* rstd, const T* inp, Nullable<const T> gain, int N, int C, double eps) {
  parallel_for(
      N,
      [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const T* x = inp + r * C;
          double ss = 0.0;
          for (int c = 0; c < C; ++c) ss += double(x[c]) * double(x[c]);
          const double rs = 1.0 / std::sqrt(ss / C + eps);
          T* o = out + r * C;
          for (int c = 0; c < C; ++c) o[c] = T(double(x[c]) * rs * (gain ? double(gain[c]) : 1.0));
          rstd[r] = T(rs);
        }
      },
      rows_per_chunk(int64_t(C) * 3));
}

template <typename T>
void rmsnorm_bwd(Nullable<T> dinp, Nullable<T> dgain, const T* dout, const T* inp,
                 Nullable<const T> gain, const T* rstd, int N, int C) {
  PG_CHECK(gain || !dgain, "rmsnorm_bwd: dgain given without a gain");
  if (dinp) {
    parallel_for(
        N,
        [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) {
            const T* x = inp + r * C;
            const T* d = dout + r * C;
            const double rs = rstd[r];
            double gx_mean = 0.0;  // mean(g·xhat)
            for (int c = 0; c < C; ++c)
              gx_mean += double(d[c]) * (gain ? double(gain[c]) : 1.0) * double(x[c]) * rs;
            gx_mean /= C;
            T* dx = dinp + r * C;
            for (int c = 0; c < C; ++c) {
              const double g = double(d[c]) * (gain ? double(gain[c]) : 1.0);
              dx[c] += T(rs * (g - double(x[c]) * rs * gx_mean));
            }
          }
        },
        rows_per_chunk(int64_t(C) * 5));
  }
  norm_param_grads(dgain, static_cast<T*>(nullptr), dout, N, C,
                   [&](int64_t r, int64_t c) { return double(inp[r * C + c]) * double(rstd[r]); });
}

template void layernorm_fwd<float>(float*, float*, float*, const float*, const float*, const float*,
                                   int, int, double);
template void layernorm_fwd<double>(double*, double*, double*, const double*, const double*,
                                    const double*, int, int, double);
template void layernorm_bwd<float>(float*, float*, float*, const float*, const float*, const float*,
                                   const float*, const float*, int, int);
template void layernorm_bwd<double>(double*, double*, double*, const double*, const double*,
                                    const double*, const double*, const double*, int, int);
template void rmsnorm_fwd<float>(float*, float*, const float*, const float*, int, int, double);
template void rmsnorm_fwd<double>(double*, double*, const double*, const double*, int, int, double);
template void rmsnorm_bwd<float>(float*, float*, const float*, const float*, const float*,
                                 const float*, int, int);
template void rmsnorm_bwd<double>(double*, double*, const double*, const double*, const double*,
                                  const double*, int, int);

}  // namespace pg::cpu
