// AdamW with decoupled weight decay (Loshchilov & Hutter) over the flat parameter buffer:
//   m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;  m^ = m/(1-b1^t);  v^ = v/(1-b2^t)
//   w <- w (1 - lr wd [if the tensor decays]) - lr m^ / (sqrt(v^) + eps)
// Moments are fp32, at the parameter's own offsets; only tensors with `muon == false` are touched.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "config/config.hpp"
#include "model/param_table.hpp"

namespace pg {

class AdamW {
 public:
  AdamW(const OptimConfig& cfg, const ParamTable& table);
  // t counts updates from 1 (bias correction); lr is this step's learning rate.
  void step(std::span<float> params, std::span<const float> grads, double lr, int64_t t);
  std::vector<float>& m() { return m_; }
  std::vector<float>& v() { return v_; }
  const std::vector<float>& m() const { return m_; }
  const std::vector<float>& v() const { return v_; }

 private:
  OptimConfig cfg_;
  const ParamTable* table_;
  std::vector<float> m_, v_;
};

// sqrt(sum g^2) over the whole flat buffer, accumulated in double.
double global_grad_norm(std::span<const float> grads);

}  // namespace pg
