// optim.kind = muon: Muon on the tensors flagged muon, AdamW on the others, one schedule
// (make_optimizer in optimizer.hpp returns it). With adamw_owned (ZeRO-1 on the CPU: this rank's
// parts of the gradient buckets, dist::DataParallel::owned()) AdamW keeps moments for those
// elements only, while Muon updates every matrix and keeps its whole state on every rank (its
// Newton-Schulz work may still be split over the ranks by ns_split).
#pragma once
#include <span>
#include <string>
#include <vector>

#include "optim/adamw.hpp"
#include "optim/muon.hpp"
#include "optim/optimizer.hpp"

namespace pg {

class MuonAdamW final : public Optimizer {
 public:
  MuonAdamW(const OptimConfig& cfg, const ParamTable& table, NsSplitFn ns_split,
            std::vector<ElementRange> adamw_owned = {})
      : muon_(cfg, table, std::move(ns_split)), adamw_(cfg, table, std::move(adamw_owned)) {}
  void step(std::span<float> params, std::span<const float> grads, double lr_factor, int64_t t) override {
    muon_.step(params, grads, lr_factor, t);
    adamw_.step(params, grads, lr_factor, t);
  }
  // Both optimizers' state; AdamW's only when it owns the whole buffer (else gather adamw()'s).
  std::vector<StateTensor> state() override {
    auto s = muon_.state();
    auto a = adamw_.state();
    s.insert(s.end(), a.begin(), a.end());
    return s;
  }
  std::vector<std::string> describe() const override {
    auto d = muon_.describe();
    d.push_back(adamw_.describe().at(0));
    return d;
  }
  Muon& muon() { return muon_; }
  AdamW& adamw() { return adamw_; }

 private:
  Muon muon_;
  AdamW adamw_;
};

}  // namespace pg
