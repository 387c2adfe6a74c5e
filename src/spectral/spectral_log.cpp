// The spectral-norm monitor's lines (see spectral_log.hpp).
#include "spectral/spectral_log.hpp"

#include <fnmatch.h>

#include <sstream>

#include "spectral/certificate.hpp"
#include "spectral/constrain.hpp"
#include "spectral/monitor.hpp"
#include "spectral/power_iteration.hpp"

namespace pg {

bool monitor_matches(const std::string& filter, const std::string& name) {
  std::stringstream ss(filter);
  for (std::string pat; std::getline(ss, pat, ',');)
    if (!pat.empty() && fnmatch(pat.c_str(), name.c_str(), 0) == 0) return true;
  return false;
}

double monitor_sigma(const SpectralConfig& s, const float* W, int rows, int cols) {
  if (s.monitor_method == "power") return sigma_max_power(W, rows, cols, s.monitor_iters);
  return sigma_max_polar(W, rows, cols, s.monitor_method, s.monitor_iters);
}

std::vector<nlohmann::json> spectral_monitor_lines(const Config& cfg, const ParamTable& table, int64_t step,
                                                   const std::function<double(const ParamInfo&, int64_t)>& sigma,
                                                   const std::function<nlohmann::json()>& certificate) {
  std::vector<nlohmann::json> out;
  const SpectralConfig& s = cfg.spectral;
  for (const auto& p : table.entries()) {
    if (!p.is_matrix() || !monitor_matches(s.monitor_filter, p.name)) continue;
    const int64_t slices = matrix_slices(p);
    for (int64_t i = 0; i < slices; ++i) {
      nlohmann::json j = {{"step", step}, {"name", p.name}, {"sigma_max", sigma(p, i)}, {"method", s.monitor_method}};
      if (p.shape.size() > 2) j["slice"] = i;
      out.push_back(std::move(j));
    }
  }
  if (cfg.model.variant == "lipschitz") out.push_back({{"step", step}, {"certificate", certificate()}});
  return out;
}

std::vector<nlohmann::json> spectral_monitor_lines(const Config& cfg, const ParamTable& table,
                                                   std::span<const float> params, int64_t step) {
  return spectral_monitor_lines(
      cfg, table, step,
      [&](const ParamInfo& p, int64_t i) {
        const int rows = int(p.rows()), cols = int(p.cols());
        return monitor_sigma(cfg.spectral, params.data() + p.offset + i * rows * cols, rows, cols);
      },
      [&] { return lipschitz_certificate(cfg, table, params).to_json(); });
}

}  // namespace pg
