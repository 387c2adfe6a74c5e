// `polargpt inspect`: the spectral state of a checkpoint. Per weight matrix (2-D and up; a 3-D
// tensor per [rows, cols] slice) its name, shape, role, measured sigma_max (power iteration on
// W^T W, kInspectIters iterations) and, when constrained, the w_max bound on sigma_max that the
// projection enforces (spectral.norm = rms already converted); then the network's Lipschitz
// certificate (certificate.hpp) for model.variant = lipschitz, null otherwise.
//   {"matrices": [{"name", "shape", "role", "sigma_max", "w_max"?, "slice"?}, ...],
//    "certificate": {...} | null}
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace pg {

inline constexpr int kInspectIters = 100;

nlohmann::json inspect_checkpoint(const std::string& ckpt_dir);
// A readable table of the same.
std::string inspect_text(const nlohmann::json& report);

}  // namespace pg
