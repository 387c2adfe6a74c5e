// Muon (momentum orthogonalised by Newton-Schulz) for the tensors with ParamInfo::muon set:
// 2-D hidden matrices and, for a tensor [n_expert, rows, cols], each expert's rows x cols matrix.
// Per step, with G the (clipped) gradient of one matrix of shape rows x cols, mu = optim.muon_momentum:
//   B <- mu B + (1 - mu) G                                   momentum buffer (fp32, state)
//   D  = (1 - mu) G + mu B  (Nesterov, default)  or  D = B   direction
//   O  = NS(D) ~ msign(D)                                    all Muon matrices grouped by oriented
//                                                            shape and orthogonalised together (ns_groups.hpp)
//   W <- W (1 - lr wd)                                       decoupled decay (tensors that decay)
//   W <- W - lr scale O,  lr = optim.muon_lr * lr_factor
//   scale: keller    = sqrt(max(1, rows / cols))             (O's RMS is 1/sqrt(max(rows, cols)):
//          moonlight = 0.2 sqrt(max(rows, cols))              this makes the update RMS 0.2, like
//                                                             AdamW's, so one lr can serve both)
// wd is optim.weight_decay. NS runs optim.ns_steps of optim.ns_schedule at optim.ns_precision,
// the input divided by ||D||_F * safety, and Polar Express is built with the same safety:
// 1.01 (the published Polar Express recipe), 1.02 at fp16 (ALGORITHMS.md: its rounding pushes
// singular values further past 1). State: "<name>.momentum_buffer".
// Test: tests/optim/test_muon.cpp.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "optim/newton_schulz.hpp"
#include "optim/ns_groups.hpp"
#include "optim/optimizer.hpp"

namespace pg {

// The update scale of a rows x cols matrix under rule "keller" | "moonlight".
double muon_update_scale(const std::string& rule, int64_t rows, int64_t cols);
// The Newton-Schulz safety factor Muon uses at a precision (1.02 at fp16, else 1.01), and the
// coefficient schedule it runs (optim.ns_schedule x optim.ns_steps built with that safety). The
// soft cap's coupling (spectral/constrain.hpp) bounds Muon's update with the same schedule.
double muon_ns_safety(NsPrecision precision);
std::vector<NsCoeffs> muon_ns_schedule(const OptimConfig& cfg);

class Muon final : public Optimizer {
 public:
  // Throws UserError for a bad NS configuration (schedule name, steps, precision).
  // ns_split: see make_optimizer (optimizer.hpp); empty = all NS work on this process.
  Muon(const OptimConfig& cfg, const ParamTable& table, NsSplitFn ns_split = {});
  void step(std::span<float> params, std::span<const float> grads, double lr_factor, int64_t t) override;
  std::vector<StateTensor> state() override;
  std::vector<std::string> describe() const override;

  const NsGroups& ns_groups() const { return ns_; }

 private:
  struct Matrix {       // one matrix of a Muon tensor (an expert of a 3-D tensor is one of these)
    int64_t offset;     // into the flat buffers
    int rows, cols;
    float decay_scale;  // 1 when the tensor decays, else 0 (norms never reach Muon, but the flag rules)
  };
  OptimConfig cfg_;
  const ParamTable* table_;
  std::vector<Matrix> matrices_;
  std::vector<float*> direction_ptrs_;  // into direction_, one per matrix, for NsGroups::run
  std::vector<float> momentum_, direction_;
  std::vector<NsCoeffs> schedule_;
  NsPrecision precision_;
  double safety_;
  NsGroups ns_;
  std::vector<MatrixShape> shapes_;  // of matrices_, for ns_split_
  NsSplitFn ns_split_;
};

}  // namespace pg
