// The parameter table: every parameter tensor of a model as a named, shaped slice of ONE flat
// buffer (DESIGN.md decision 2). Gradients and optimizer state use the same offsets, so
// collectives, checkpoints and elementwise optimizer updates are single calls over contiguous
// memory, while names keep checkpoints independent of parameter order.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace pg {

// What a tensor is in the model; decides its default optimizer, weight decay and constraints.
enum class Role { embed, pos_embed, head, attn, mlp, norm, bias, router, expert };
std::string_view role_name(Role r);

struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0;  // in elements, into the flat buffer
  int64_t numel = 0;
  Role role = Role::attn;
  bool weight_decay = true;    // decoupled decay applies (never for norms, gains, biases)
  bool muon = false;           // optimised by Muon (2-D hidden matrices, experts) instead of AdamW
  bool constrained = false;    // spectrally projected after each step
  bool is_matrix() const { return shape.size() >= 2; }
  int64_t rows() const { return shape.size() >= 2 ? shape[shape.size() - 2] : 1; }
  int64_t cols() const { return shape.empty() ? 1 : shape.back(); }
};

class ParamTable {
 public:
  // Appends a tensor; returns its index. Offsets are aligned to 64 elements so every tensor
  // starts on a 256-byte boundary in fp32 (vectorised and cuBLASLt-friendly).
  int add(std::string name, std::vector<int64_t> shape, Role role, bool weight_decay);
  const std::vector<ParamInfo>& entries() const { return entries_; }
  std::vector<ParamInfo>& entries() { return entries_; }
  const ParamInfo& at(int i) const { return entries_.at(size_t(i)); }
  const ParamInfo* find(std::string_view name) const;
  const ParamInfo& get(std::string_view name) const;  // logic_error if absent
  int64_t offset_of(std::string_view name) const;     // -1 if absent (optional tensors)
  int64_t total() const { return total_; }             // flat buffer length incl. alignment padding
  int64_t n_params() const;                            // sum of numel (what "parameters" means to users)

 private:
  std::vector<ParamInfo> entries_;
  int64_t total_ = 0;
};

}  // namespace pg
