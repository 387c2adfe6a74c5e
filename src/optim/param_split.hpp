// Which optimizer owns each parameter (ParamInfo::muon), decided once when the table is built.
//
//   optim.kind = adamw: every tensor on AdamW.
//   optim.kind = muon:  by role, 2-D attention / MLP matrices and 3-D expert tensors
//                       ([n_expert, rows, cols]: each expert is its own matrix) on Muon; embeddings,
//                       LM head, norms, gains, biases and the MoE router on AdamW (their gradients
//                       are not matrix-shaped updates that orthogonalisation helps). Then
//                       optim.muon_include moves matching names onto Muon and optim.muon_exclude
//                       moves matching names back to AdamW (exclude wins).
// Patterns are comma-separated shell globs (fnmatch: `*` also crosses dots, so `h.*.attn.*`
// names every attention tensor). A pattern that matches nothing, or an include that names a
// tensor with fewer than 2 dimensions, is a UserError naming the key: a typo should not
// silently fall back to the default split. Test: tests/optim/test_param_split.cpp.
#pragma once
#include <string>
#include <vector>

#include "config/config.hpp"
#include "model/param_table.hpp"

namespace pg {

// Sets ParamInfo::muon for every entry of `table` as described above.
void assign_optimizers(ParamTable& table, const OptimConfig& cfg);

// "a,b , c" -> {"a", "b", "c"} (blanks around commas dropped, empty items skipped).
std::vector<std::string> split_patterns(const std::string& list);
bool glob_match(const std::string& pattern, const std::string& name);

}  // namespace pg
