// AdamW with decoupled weight decay (Loshchilov & Hutter) over the flat parameter buffer:
//   m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;  m^ = m/(1-b1^t);  v^ = v/(1-b2^t)
//   w <- w (1 - lr wd [if the tensor decays]) - lr m^ / (sqrt(v^) + eps),   lr = optim.lr * lr_factor
// Moments are fp32, at the parameter's own offsets; only tensors with `muon == false` are touched,
// and only theirs are state ("<name>.exp_avg", "<name>.exp_avg_sq"). Test: tests/optim/test_optimizer.cpp.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "optim/optimizer.hpp"

namespace pg {

class AdamW final : public Optimizer {
 public:
  AdamW(const OptimConfig& cfg, const ParamTable& table);
  void step(std::span<float> params, std::span<const float> grads, double lr_factor, int64_t t) override;
  std::vector<StateTensor> state() override;
  std::vector<std::string> describe() const override;

 private:
  OptimConfig cfg_;
  const ParamTable* table_;
  std::vector<float> m_, v_;
};

// sqrt(sum g^2) over the whole flat buffer, accumulated in double.
double global_grad_norm(std::span<const float> grads);

}  // namespace pg
