// Timing of GPU work in the bench programs: the median of `reps` runs (default 20) after `warmup`
// untimed ones (default 3), CUDA events on the stream the work is enqueued on.
#pragma once
#include <algorithm>
#include <functional>
#include <vector>

#include "backend/cuda/device.hpp"

namespace pg::bench {

inline float median_ms(cuda::Stream& stream, const std::function<void()>& fn, int reps = 20, int warmup = 3) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<float> ms;
  cuda::Event start, stop;
  for (int i = 0; i < reps; ++i) {
    start.record(stream.get());
    fn();
    stop.record(stream.get());
    stop.synchronize();
    ms.push_back(stop.elapsed_ms_since(start));
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace pg::bench
