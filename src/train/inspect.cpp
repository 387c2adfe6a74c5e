// `polargpt inspect` (see inspect.hpp).
#include "train/inspect.hpp"

#include <cstdio>
#include <vector>

#include "model/gpt.hpp"
#include "spectral/certificate.hpp"
#include "spectral/constrain.hpp"
#include "spectral/power_iteration.hpp"
#include "train/checkpoint.hpp"

namespace pg {

nlohmann::json inspect_checkpoint(const std::string& ckpt_dir) {
  const nlohmann::json st = load_state_json(ckpt_dir);
  const Config cfg = from_json(st.at("config"), ckpt_dir + "/state.json");
  const ParamTable table = with_constraints(cfg, build_gpt_params(cfg));
  std::vector<float> params(size_t(table.total()), 0.0f);
  load_model_weights(ckpt_dir, table, params);

  nlohmann::json mats = nlohmann::json::array();
  for (const auto& p : table.entries()) {
    if (!p.is_matrix()) continue;
    const int rows = int(p.rows()), cols = int(p.cols());
    const int64_t slices = matrix_slices(p);
    for (int64_t i = 0; i < slices; ++i) {
      nlohmann::json j = {{"name", p.name},
                          {"shape", p.shape},
                          {"role", std::string(role_name(p.role))},
                          {"sigma_max", sigma_max_power(params.data() + p.offset + i * rows * cols, rows, cols, kInspectIters)}};
      if (p.constrained) j["w_max"] = sigma_bound(cfg.spectral, p.role, rows, cols);
      if (slices > 1) j["slice"] = i;
      mats.push_back(std::move(j));
    }
  }
  nlohmann::json cert = nullptr;
  if (cfg.model.variant == "lipschitz") cert = lipschitz_certificate(cfg, table, params).to_json();
  return {{"matrices", mats}, {"certificate", cert}};
}

std::string inspect_text(const nlohmann::json& report) {
  std::string out;
  char buf[256];
  std::snprintf(buf, sizeof buf, "%-28s %-14s %-9s %12s %10s\n", "name", "shape", "role", "sigma_max", "w_max");
  out += buf;
  for (const auto& m : report.at("matrices")) {
    std::string shape;
    for (const auto& d : m.at("shape")) shape += (shape.empty() ? "" : "x") + std::to_string(d.get<int64_t>());
    std::string name = m.at("name").get<std::string>();
    if (m.contains("slice")) name += "[" + std::to_string(m.at("slice").get<int64_t>()) + "]";
    const std::string wmax = m.contains("w_max") ? std::to_string(m.at("w_max").get<double>()) : "-";
    std::snprintf(buf, sizeof buf, "%-28s %-14s %-9s %12.6f %10s\n", name.c_str(), shape.c_str(),
                  m.at("role").get<std::string>().c_str(), m.at("sigma_max").get<double>(), wmax.c_str());
    out += buf;
  }
  const auto& c = report.at("certificate");
  if (c.is_null()) {
    out += "certificate: none (model.variant is not lipschitz)\n";
  } else {
    std::snprintf(buf, sizeof buf, "certificate: log10 L = %.4f (measured sigma_max)", c.at("log10_lipschitz_bound").get<double>());
    out += buf;
    if (c.contains("log10_lipschitz_bound_wmax")) {
      std::snprintf(buf, sizeof buf, ", %.4f (enforced w_max)", c.at("log10_lipschitz_bound_wmax").get<double>());
      out += buf;
    }
    std::snprintf(buf, sizeof buf, "; input radius %.4f\n", c.at("input_radius").get<double>());
    out += buf;
  }
  return out;
}

}  // namespace pg
