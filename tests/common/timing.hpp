// Wall-clock timing for the hidden benchmarks: the best of `reps` runs of f, in seconds (the
// minimum is the least disturbed by other load on a shared machine).
#pragma once
#include <algorithm>
#include <chrono>
#include <ctime>

namespace pg::test {

template <typename F>
double best_of(int reps, const F& f) {
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

// The same in CPU time of the calling thread (for single-threaded runs on a machine shared with
// other work: waiting for a core does not count, unlike wall time).
template <typename F>
double best_cpu_of(int reps, const F& f) {
  const auto now = [] {
    timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
  };
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const double t0 = now();
    f();
    best = std::min(best, now() - t0);
  }
  return best;
}

}  // namespace pg::test
