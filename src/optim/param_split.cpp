#include "optim/param_split.hpp"

#include <fnmatch.h>

#include "core/error.hpp"

namespace pg {

std::vector<std::string> split_patterns(const std::string& list) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {
    size_t end = list.find(',', start);
    if (end == std::string::npos) end = list.size();
    std::string item = list.substr(start, end - start);
    const size_t b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    if (b != std::string::npos) out.push_back(item.substr(b, e - b + 1));
    start = end + 1;
  }
  return out;
}

bool glob_match(const std::string& pattern, const std::string& name) {
  return fnmatch(pattern.c_str(), name.c_str(), 0) == 0;
}

namespace {

bool muon_by_role(const ParamInfo& p) {
  if (p.role == Role::expert) return p.shape.size() == 3;
  return p.shape.size() == 2 && (p.role == Role::attn || p.role == Role::mlp);
}

// Applies `list` (key names it in errors): every matching entry gets muon = to_muon.
void apply_patterns(ParamTable& table, const std::string& list, const char* key, bool to_muon) {
  for (const std::string& pat : split_patterns(list)) {
    bool matched = false;
    for (auto& p : table.entries()) {
      if (!glob_match(pat, p.name)) continue;
      matched = true;
      if (to_muon && !p.is_matrix())
        throw UserError(std::string(key) + ": pattern '" + pat + "' matches " + p.name +
                        ", which has fewer than 2 dimensions and cannot use Muon");
      p.muon = to_muon;
    }
    if (!matched) throw UserError(std::string(key) + ": pattern '" + pat + "' matches no parameter name");
  }
}

}  // namespace

void assign_optimizers(ParamTable& table, const OptimConfig& cfg) {
  const bool muon = cfg.kind == "muon";
  for (auto& p : table.entries()) p.muon = muon && muon_by_role(p);
  if (!muon) return;  // adamw: the patterns only steer the muon split
  apply_patterns(table, cfg.muon_include, "optim.muon_include", true);
  apply_patterns(table, cfg.muon_exclude, "optim.muon_exclude", false);
}

}  // namespace pg
