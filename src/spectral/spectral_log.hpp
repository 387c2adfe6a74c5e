// The spectral-norm monitor of a training run: every spectral.monitor_every steps (rank 0) one
// line per matching matrix to RUN_DIR/spectral.jsonl,
//   {"step": s, "name": "h.0.attn.q.weight", "sigma_max": 1.02, "method": "ns3-accurate"}
// (3-D tensors: one line per [rows, cols] slice, with "slice": i), then, for the lipschitz
// variant, one certificate line {"step": s, "certificate": {...}} (certificate.hpp).
// Matching: spectral.monitor_filter is a comma-separated list of glob patterns (fnmatch: `*`,
// `?`, `[...]`) on parameter names; only matrices (2-D and up) are measured.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/config.hpp"
#include "model/param_table.hpp"

namespace pg {

bool monitor_matches(const std::string& filter, const std::string& name);

// sigma_max of one [rows, cols] matrix by spectral.monitor_method ("ns5-fast" | "ns3-accurate" |
// "power") with spectral.monitor_iters iterations.
double monitor_sigma(const SpectralConfig& s, const float* W, int rows, int cols);

// The lines described above, for one step.
std::vector<nlohmann::json> spectral_monitor_lines(const Config& cfg, const ParamTable& table,
                                                   std::span<const float> params, int64_t step);
// The same lines from a sigma per (matrix, slice) and the certificate (called for the lipschitz
// variant only): the CUDA monitor measures on the device and writes through this.
std::vector<nlohmann::json> spectral_monitor_lines(const Config& cfg, const ParamTable& table, int64_t step,
                                                   const std::function<double(const ParamInfo&, int64_t)>& sigma,
                                                   const std::function<nlohmann::json()>& certificate);

}  // namespace pg
