// AdamW with decoupled weight decay (Loshchilov & Hutter) over the flat parameter buffer:
//   m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;  m^ = m/(1-b1^t);  v^ = v/(1-b2^t)
//   w <- w (1 - lr wd [if the tensor decays]) - lr m^ / (sqrt(v^) + eps)
// Moments are fp32; only tensors with `muon == false` are touched. By default the optimizer owns
// the whole flat buffer and the moments sit at the parameters' own offsets. Under ZeRO-1
// (dist/data_parallel.hpp) a rank owns a list of element ranges and keeps moments for those only,
// concatenated in range order ("compact" layout); a range may cut through a tensor.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "config/config.hpp"
#include "model/param_table.hpp"

namespace pg {

struct ElementRange {  // [begin, end) in the flat buffer
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};

class AdamW {
 public:
  // owned: the ranges this optimizer updates; empty = the whole buffer [0, table.total()).
  AdamW(const OptimConfig& cfg, const ParamTable& table, std::vector<ElementRange> owned = {});
  // t counts updates from 1 (bias correction); lr is this step's learning rate.
  void step(std::span<float> params, std::span<const float> grads, double lr, int64_t t);
  const std::vector<ElementRange>& owned() const { return owned_; }
  // Moments in the compact layout (the flat layout when the whole buffer is owned).
  std::vector<float>& m() { return m_; }
  std::vector<float>& v() { return v_; }
  const std::vector<float>& m() const { return m_; }
  const std::vector<float>& v() const { return v_; }

 private:
  OptimConfig cfg_;
  const ParamTable* table_;
  std::vector<ElementRange> owned_;
  std::vector<float> m_, v_;
};

// sqrt(sum g^2) over the whole flat buffer, accumulated in double.
double global_grad_norm(std::span<const float> grads);

}  // namespace pg
