#include "model/param_table.hpp"

#include <stdexcept>

namespace pg {

std::string_view role_name(Role r) {
  switch (r) {
    case Role::embed: return "embed";
    case Role::pos_embed: return "pos_embed";
    case Role::head: return "head";
    case Role::attn: return "attn";
    case Role::mlp: return "mlp";
    case Role::norm: return "norm";
    case Role::bias: return "bias";
    case Role::router: return "router";
    case Role::expert: return "expert";
  }
  return "?";
}

int ParamTable::add(std::string name, std::vector<int64_t> shape, Role role, bool weight_decay) {
  ParamInfo p;
  p.name = std::move(name);
  p.shape = std::move(shape);
  p.numel = 1;
  for (int64_t d : p.shape) p.numel *= d;
  p.role = role;
  p.weight_decay = weight_decay;
  constexpr int64_t kAlign = 64;
  p.offset = (total_ + kAlign - 1) / kAlign * kAlign;
  total_ = p.offset + p.numel;
  entries_.push_back(std::move(p));
  return int(entries_.size()) - 1;
}

const ParamInfo* ParamTable::find(std::string_view name) const {
  for (const auto& p : entries_)
    if (p.name == name) return &p;
  return nullptr;
}

const ParamInfo& ParamTable::get(std::string_view name) const {
  const ParamInfo* p = find(name);
  if (!p) throw std::logic_error("no parameter named " + std::string(name));
  return *p;
}

int64_t ParamTable::offset_of(std::string_view name) const {
  const ParamInfo* p = find(name);
  return p ? p->offset : -1;
}

int64_t ParamTable::n_params() const {
  int64_t n = 0;
  for (const auto& p : entries_) n += p.numel;
  return n;
}

}  // namespace pg
