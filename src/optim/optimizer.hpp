// The optimizer as the trainer sees it: one step over the flat parameter and gradient buffers
// (laid out by the ParamTable), its state as named tensors for checkpoints, and a line saying
// who optimises what. Two implementations: AdamW (adamw.hpp) for every tensor with
// ParamInfo::muon == false, Muon (muon.hpp) for the rest; make_optimizer() returns AdamW alone
// (optim.kind = adamw) or both side by side (optim.kind = muon), sharing one lr schedule.
//
// State tensors are keyed "<parameter name>.<slot>" (exp_avg, exp_avg_sq, momentum_buffer), so
// a checkpoint does not depend on the order of the parameters in the flat buffer.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "model/param_table.hpp"
#include "optim/ns_groups.hpp"

namespace pg {

// A view of one state tensor inside an optimizer's buffers (fp32, row-major, shape of the
// parameter it belongs to).
struct StateTensor {
  std::string name;
  std::vector<int64_t> shape;
  float* data;
  int64_t numel;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // One update. lr_factor is the schedule's multiplier (learning_rate / optim.lr) applied to each
  // optimizer's own peak lr; t counts updates from 1 (AdamW's bias correction).
  virtual void step(std::span<float> params, std::span<const float> grads, double lr_factor, int64_t t) = 0;
  // Every state tensor, views into the optimizer's own buffers (valid while it lives): the
  // checkpoint writes them and reads them back in place.
  virtual std::vector<StateTensor> state() = 0;
  // Log lines, one per optimizer: tensor counts, parameter totals, settings (Muon: shape groups).
  virtual std::vector<std::string> describe() const = 0;
};

// How Muon runs a step's Newton-Schulz work. Empty: every matrix on this process. The
// data-parallel trainer passes a splitter (dist/muon_split.hpp) that orthogonalises each matrix
// on one rank, by calling `local` (the same NS settings) on that rank's share, and gives every
// rank every result.
using NsLocalFn = std::function<void(std::span<float* const> mats, std::span<const MatrixShape> shapes)>;
using NsSplitFn =
    std::function<void(std::span<float* const> mats, std::span<const MatrixShape> shapes, const NsLocalFn& local)>;

// AdamW alone or Muon + AdamW, by the table's muon flags (set by assign_optimizers from
// optim.kind and the include/exclude patterns). The table must outlive the optimizer.
std::unique_ptr<Optimizer> make_optimizer(const OptimConfig& cfg, const ParamTable& table, NsSplitFn ns_split = {});

}  // namespace pg
