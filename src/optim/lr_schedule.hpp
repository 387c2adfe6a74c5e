// Learning-rate schedule: linear warm-up to optim.lr over warmup_steps, then
//   constant: lr;
//   cosine / linear: lr decays to lr * min_lr_ratio over the last `warmdown_steps` steps
//   (all steps after warm-up when warmdown_steps = 0), by half a cosine or a straight line.
// `step` counts from 0; the last step is max_steps - 1 and gets the floor exactly.
#pragma once
#include "config/config.hpp"

namespace pg {

double learning_rate(const OptimConfig& o, int step, int max_steps);
// The same schedule as a multiplier of the peak lr (learning_rate / optim.lr): each optimizer
// applies it to its own peak (optim.lr for AdamW, optim.muon_lr for Muon).
double lr_factor(const OptimConfig& o, int step, int max_steps);

}  // namespace pg
