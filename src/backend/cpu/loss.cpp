// Softmax cross-entropy over logits[N,V], forward and backward, split over rows. With V = 50257
// this and the LM-head GEMM are the CPU trainer's hot spots. Per row: m = max, then
// Σ exp(x - m) with each exp in T and the sum in double, so logsumexp = m + log(Σ) is stable and
// accurate for T = float. The mean loss sums the per-row losses serially, in row order.
// T = double uses plain loops and std::exp (it serves gradient checks); T = float, the trainer's
// type, uses the 8-lane vectors and exp of simd.hpp (7x faster than scalar expf on AVX-512).
#include <atomic>
#include <cmath>
#include <string>
#include <utility>

#include "backend/cpu/ops.hpp"
#include "backend/cpu/parallel.hpp"
#include "backend/cpu/simd.hpp"
#include "core/error.hpp"

namespace pg::cpu {
namespace {

// ---- generic rows (T = double: the gradient-check path) -----------------------------------------

template <typename T>
struct RowStats {
  T max;       // row maximum (NaNs skipped)
  int argmax;  // its lowest index; -1 when the row has no ordered maximum (all NaN)
  double sum;  // Σ exp(x - max), accumulated in double
};

template <typename T>
RowStats<T> row_stats(const T* x, int V, [[maybe_unused]] bool want_argmax) {
  RowStats<T> st{-INFINITY, -1, 0.0};
  for (int j = 0; j < V; ++j) {
    if (x[j] > st.max) {
      st.max = x[j];
      st.argmax = j;
    }
  }
  for (int j = 0; j < V; ++j) st.sum += double(std::exp(x[j] - st.max));
  return st;
}

// d[j] = e^(x_j - max) · scale for all j (d may be x).
template <typename T>
void row_scaled_exp(T* d, const T* x, int V, T max, double scale) {
  for (int j = 0; j < V; ++j) d[j] = T(double(std::exp(x[j] - max)) * scale);
}

// ---- float rows: 8-lane vectors (simd.hpp). The lane order of the double sum is fixed, so a
// row's result depends only on the row. ---------------------------------------------------------

PG_SIMD_CLONES
RowStats<float> row_stats_f32(const float* x, int V, bool want_argmax) {
  using namespace simd;
  const int full = V / kLanes * kLanes, rest = V - full;
  f32x8 mv = splat(-INFINITY);
  for (int j = 0; j < full; j += kLanes) {
    const f32x8 v = load(x + j);
    mv = v > mv ? v : mv;
  }
  if (rest) {
    const f32x8 v = load_tail(x + full, rest, -INFINITY);
    mv = v > mv ? v : mv;
  }
  RowStats<float> st{-INFINITY, -1, 0.0};
  for (int i = 0; i < kLanes; ++i) st.max = mv[i] > st.max ? mv[i] : st.max;
  if (want_argmax) {
    for (int j = 0; j < V; ++j) {
      if (x[j] == st.max) {
        st.argmax = j;
        break;
      }
    }
  }
  const f32x8 m = splat(st.max);
  f64x8 acc{};
  for (int j = 0; j < full; j += kLanes)
    acc += __builtin_convertvector(exp_nonpositive(load(x + j) - m), f64x8);
  if (rest)
    acc +=
        __builtin_convertvector(exp_nonpositive(load_tail(x + full, rest, -INFINITY) - m), f64x8);
  st.sum = sum_lanes(acc);
  return st;
}

PG_SIMD_CLONES
void row_scaled_exp_f32(float* d, const float* x, int V, float max, double scale) {
  using namespace simd;
  const int full = V / kLanes * kLanes, rest = V - full;
  const f32x8 m = splat(max);
  const float s = float(scale);
  for (int j = 0; j < full; j += kLanes) store(d + j, exp_nonpositive(load(x + j) - m) * s);
  if (rest)
    store_tail(d + full, exp_nonpositive(load_tail(x + full, rest, -INFINITY) - m) * s, rest);
}

inline RowStats<float> row_stats(const float* x, int V, bool want_argmax) {
  return row_stats_f32(x, V, want_argmax);
}
inline void row_scaled_exp(float* d, const float* x, int V, float max, double scale) {
  row_scaled_exp_f32(d, x, V, max, scale);
}

void check_target(int32_t tgt, int V) {
  PG_CHECK(tgt >= 0 && tgt < V, "cross_entropy: target " + std::to_string(tgt) +
                                    " outside the vocabulary [0, " + std::to_string(V) + ")");
}

}  // namespace

template <typename T>
double cross_entropy_fwd(T* losses, int64_t* n_correct, const T* logits, const int32_t* targets,
                         int N, int V, T* lse_out) {
  PG_CHECK(V > 0, "cross_entropy_fwd: empty vocabulary");
  std::atomic<int64_t> correct{0};
  parallel_for(
      N,
      [&](int64_t r0, int64_t r1) {
        int64_t hits = 0;
        for (int64_t r = r0; r < r1; ++r) {
          const T* x = logits + r * V;
          const int32_t tgt = targets[r];
          check_target(tgt, V);
          const RowStats<T> st = row_stats(x, V, n_correct != nullptr);
          const double lse = double(st.max) + std::log(st.sum);
          losses[r] = T(lse - double(x[tgt]));
          if (lse_out) lse_out[r] = T(lse);
          hits += (st.argmax == tgt);
        }
        correct += hits;  // integer: the order of the additions does not matter
      },
      rows_per_chunk(int64_t(V) * 4));
  if (n_correct) *n_correct = correct.load();
  double total = 0.0;
  for (int64_t r = 0; r < N; ++r) total += double(losses[r]);
  return N > 0 ? total / N : 0.0;
}

// Rows of d = softmax(x)·dloss, less dloss at the target, with softmax(x) = e^(x - shift)·scale/dloss
// and (shift, scale) = row(r, x); `cost` is the work per row in passes over V (chunking only).
template <typename T, typename RowShiftScale>
void cross_entropy_bwd_rows(T* dlogits, const T* logits, const int32_t* targets, int N, int V, double dloss,
                            int cost, RowShiftScale row) {
  parallel_for(
      N,
      [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const T* x = logits + r * V;
          T* d = dlogits + r * V;  // may be x itself: every x[j] is read before d[j] is written
          const int32_t tgt = targets[r];
          check_target(tgt, V);
          const auto [shift, scale] = row(r, x);
          row_scaled_exp(d, x, V, shift, scale);
          d[tgt] = T(double(d[tgt]) - dloss);
        }
      },
      rows_per_chunk(int64_t(V) * cost));
}

template <typename T>
void cross_entropy_bwd(T* dlogits, const T* logits, const int32_t* targets, int N, int V,
                       double dloss) {
  PG_CHECK(V > 0, "cross_entropy_bwd: empty vocabulary");
  cross_entropy_bwd_rows(dlogits, logits, targets, N, V, dloss, 6, [&](int64_t, const T* x) {
    const RowStats<T> st = row_stats(x, V, false);
    return std::pair{st.max, dloss / st.sum};
  });
}

template <typename T>
void cross_entropy_bwd_lse(T* dlogits, const T* logits, const T* lse, const int32_t* targets, int N,
                           int V, double dloss) {
  PG_CHECK(V > 0, "cross_entropy_bwd_lse: empty vocabulary");
  // e^(x - lse) = softmax; lse >= every x[j], so the exponent is never positive.
  cross_entropy_bwd_rows(dlogits, logits, targets, N, V, dloss, 3,
                         [&](int64_t r, const T*) { return std::pair{lse[r], dloss}; });
}

template double cross_entropy_fwd<float>(float*, int64_t*, const float*, const int32_t*, int, int,
                                         float*);
template double cross_entropy_fwd<double>(double*, int64_t*, const double*, const int32_t*, int,
                                          int, double*);
template void cross_entropy_bwd_lse<float>(float*, const float*, const float*, const int32_t*, int,
                                           int, double);
template void cross_entropy_bwd_lse<double>(double*, const double*, const double*, const int32_t*,
                                            int, int, double);
template void cross_entropy_bwd<float>(float*, const float*, const int32_t*, int, int, double);
template void cross_entropy_bwd<double>(double*, const double*, const int32_t*, int, int, double);

}  // namespace pg::cpu
