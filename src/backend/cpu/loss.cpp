// Softmax cross-entropy over logits[N,V], forward and backward, split over rows. With V = 50257
// this and the LM-head GEMM are the CPU trainer's hot spots. Per row: m = max, then
// Σ exp(x - m) with each exp in T and the sum in double, so logsumexp = m + log(Σ) is stable and
// accurate for T = float. The mean loss sums the per-row losses serially, in row order.
#include <atomic>
#include <cmath>
#include <string>

#include "backend/cpu/ops.hpp"
#include "backend/cpu/parallel.hpp"
#include "core/error.hpp"

namespace pg::cpu {
namespace {

// Row maximum and its lowest index.
template <typename T>
void row_max(const T* x, int V, T& m, int& argmax) {
  m = x[0];
  argmax = 0;
  for (int j = 1; j < V; ++j) {
    if (x[j] > m) {
      m = x[j];
      argmax = j;
    }
  }
}

template <typename T>
double row_sum_exp(const T* x, int V, T m) {
  double s = 0.0;
  for (int j = 0; j < V; ++j) s += double(std::exp(x[j] - m));
  return s;
}

void check_target(int32_t tgt, int V) {
  PG_CHECK(tgt >= 0 && tgt < V, "cross_entropy: target " + std::to_string(tgt) +
                                    " outside the vocabulary [0, " + std::to_string(V) + ")");
}

}  // namespace

template <typename T>
double cross_entropy_fwd(T* losses, int64_t* n_correct, const T* logits, const int32_t* targets,
                         int N, int V) {
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
          T m;
          int am;
          row_max(x, V, m, am);
          const double lse = double(m) + std::log(row_sum_exp(x, V, m));
          losses[r] = T(lse - double(x[tgt]));
          hits += (am == tgt);
        }
        correct += hits;  // integer: the order of the additions does not matter
      },
      rows_per_chunk(int64_t(V) * 4));
  if (n_correct) *n_correct = correct.load();
  double total = 0.0;
  for (int64_t r = 0; r < N; ++r) total += double(losses[r]);
  return N > 0 ? total / N : 0.0;
}

template <typename T>
void cross_entropy_bwd(T* dlogits, const T* logits, const int32_t* targets, int N, int V,
                       double dloss) {
  PG_CHECK(V > 0, "cross_entropy_bwd: empty vocabulary");
  parallel_for(
      N,
      [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const T* x = logits + r * V;
          T* d = dlogits + r * V;  // may be x itself: every x[j] is read before d[j] is written
          const int32_t tgt = targets[r];
          check_target(tgt, V);
          T m;
          int am;
          row_max(x, V, m, am);
          const double scale = dloss / row_sum_exp(x, V, m);  // dloss / Σ exp(x - m)
          const double p_tgt = double(std::exp(x[tgt] - m)) * scale;
          for (int j = 0; j < V; ++j) d[j] = T(double(std::exp(x[j] - m)) * scale);
          d[tgt] = T(p_tgt - dloss);
        }
      },
      rows_per_chunk(int64_t(V) * 6));
}

template double cross_entropy_fwd<float>(float*, int64_t*, const float*, const int32_t*, int, int);
template double cross_entropy_fwd<double>(double*, int64_t*, const double*, const int32_t*, int,
                                          int);
template void cross_entropy_bwd<float>(float*, const float*, const int32_t*, int, int, double);
template void cross_entropy_bwd<double>(double*, const double*, const int32_t*, int, int, double);

}  // namespace pg::cpu
