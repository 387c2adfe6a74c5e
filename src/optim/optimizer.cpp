#include "optim/optimizer.hpp"

#include "optim/adamw.hpp"
#include "optim/muon.hpp"

namespace pg {

namespace {

// optim.kind = muon: Muon on the tensors flagged muon, AdamW on the others, one schedule.
class MuonAdamW final : public Optimizer {
 public:
  MuonAdamW(const OptimConfig& cfg, const ParamTable& table, NsSplitFn ns_split)
      : muon_(cfg, table, std::move(ns_split)), adamw_(cfg, table) {}
  void step(std::span<float> params, std::span<const float> grads, double lr_factor, int64_t t) override {
    muon_.step(params, grads, lr_factor, t);
    adamw_.step(params, grads, lr_factor, t);
  }
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

 private:
  Muon muon_;
  AdamW adamw_;
};

}  // namespace

std::unique_ptr<Optimizer> make_optimizer(const OptimConfig& cfg, const ParamTable& table, NsSplitFn ns_split) {
  if (cfg.kind == "muon") return std::make_unique<MuonAdamW>(cfg, table, std::move(ns_split));
  return std::make_unique<AdamW>(cfg, table);
}

}  // namespace pg
