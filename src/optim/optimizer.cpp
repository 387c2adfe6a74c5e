#include "optim/optimizer.hpp"

#include "optim/adamw.hpp"
#include "optim/muon_adamw.hpp"

namespace pg {

std::unique_ptr<Optimizer> make_optimizer(const OptimConfig& cfg, const ParamTable& table, NsSplitFn ns_split) {
  if (cfg.kind == "muon") return std::make_unique<MuonAdamW>(cfg, table, std::move(ns_split));
  return std::make_unique<AdamW>(cfg, table);
}

}  // namespace pg
