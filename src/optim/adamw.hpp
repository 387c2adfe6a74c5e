// AdamW with decoupled weight decay (Loshchilov & Hutter) over the flat parameter buffer:
//   m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;  m^ = m/(1-b1^t);  v^ = v/(1-b2^t)
//   w <- w (1 - lr wd [if the tensor decays]) - lr m^ / (sqrt(v^) + eps),   lr = optim.lr * lr_factor
// Moments are fp32; only tensors with `muon == false` are touched, and only theirs are state
// ("<name>.exp_avg", "<name>.exp_avg_sq"). By default the optimizer owns the whole flat buffer and
// the moments sit at the parameters' own offsets. Under ZeRO-1 (dist/data_parallel.hpp) a rank
// owns a list of element ranges and keeps moments for those only, concatenated in range order
// ("compact" layout; a range may cut through a tensor): the trainer then gathers the full
// moments for checkpoints and names them with adamw_state(). Test: tests/optim/test_optimizer.cpp.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "optim/optimizer.hpp"

namespace pg {

struct ElementRange {  // [begin, end) in the flat buffer
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};

class AdamW final : public Optimizer {
 public:
  // owned: the ranges this optimizer updates; empty = the whole buffer [0, table.total()).
  AdamW(const OptimConfig& cfg, const ParamTable& table, std::vector<ElementRange> owned = {});
  void step(std::span<float> params, std::span<const float> grads, double lr_factor, int64_t t) override;
  // Named views of the moments; only in the flat layout (the whole buffer owned from offset 0).
  std::vector<StateTensor> state() override;
  std::vector<std::string> describe() const override;
  const std::vector<ElementRange>& owned() const { return owned_; }
  // Moments in the compact layout (the flat layout when the whole buffer is owned).
  std::vector<float>& m() { return m_; }
  std::vector<float>& v() { return v_; }

 private:
  OptimConfig cfg_;
  const ParamTable* table_;
  std::vector<ElementRange> owned_;
  std::vector<float> m_, v_;
};

// AdamW's state tensors as views of whole-buffer moments m, v (flat layout, table offsets).
std::vector<StateTensor> adamw_state(const ParamTable& table, float* m, float* v);

// sqrt(sum g^2) over the whole flat buffer, accumulated in double.
double global_grad_norm(std::span<const float> grads);

}  // namespace pg
