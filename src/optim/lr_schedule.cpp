#include "optim/lr_schedule.hpp"

#include <algorithm>
#include <cmath>

namespace pg {

double learning_rate(const OptimConfig& o, int step, int max_steps) { return o.lr * lr_factor(o, step, max_steps); }

double lr_factor(const OptimConfig& o, int step, int max_steps) {
  if (step < o.warmup_steps) return double(step + 1) / double(o.warmup_steps);
  if (o.schedule == "constant") return 1.0;
  const int decay_start = o.warmdown_steps > 0 ? std::max(o.warmup_steps, max_steps - o.warmdown_steps) : o.warmup_steps;
  if (step < decay_start) return 1.0;
  const int span = max_steps - 1 - decay_start;
  const double frac = span > 0 ? std::min(1.0, double(step - decay_start) / double(span)) : 1.0;
  const double shape = o.schedule == "cosine" ? 0.5 * (1.0 + std::cos(M_PI * frac)) : 1.0 - frac;
  return o.min_lr_ratio + (1.0 - o.min_lr_ratio) * shape;
}

}  // namespace pg
