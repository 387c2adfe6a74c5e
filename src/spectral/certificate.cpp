// The Lipschitz certificate (see certificate.hpp and docs/lipschitz.md).
#include "spectral/certificate.hpp"

#include <cmath>

#include "core/error.hpp"
#include "model/cpu_gpt.hpp"
#include "spectral/constrain.hpp"
#include "spectral/power_iteration.hpp"

namespace pg {

double lipschitz_input_radius(const Config& cfg) {
  return std::sqrt(double(cfg.model.d_model)) * (cfg.model.pos == "learned" ? 2.0 : 1.0);
}

double log10_lipschitz_bound(const Config& cfg, const std::function<double(const std::string&)>& sigma) {
  PG_CHECK(cfg.model.variant == "lipschitz", "the Lipschitz certificate needs model.variant = lipschitz");
  const auto& m = cfg.model;
  const double a = 1.0 / (2.0 * m.n_layer), beta = m.attn_scale / cfg.d_head();
  const double sqrt_h = std::sqrt(double(m.n_head)), gelu = kGeluMaxSlope / kLipschitzGeluDivisor;
  double R = lipschitz_input_radius(cfg), log10_L = 0.0;
  for (int l = 0; l < m.n_layer; ++l) {
    const std::string h = "h." + std::to_string(l);
    const double sq = sigma(h + ".attn.q.weight"), sk = sigma(h + ".attn.k.weight");
    const double sv = sigma(h + ".attn.v.weight"), so = sigma(h + ".attn.o.weight");
    const double sfc = sigma(h + ".mlp.fc.weight"), sp = sigma(h + ".mlp.proj.weight");
    const double att_gain = so / 3.0 * sqrt_h * sv;  // |attn block(x)_t| <= att_gain R
    const double L_att = att_gain * (1.0 + 2.0 * beta * sq * sk * R * R);
    log10_L += std::log10((1.0 - a) + a * L_att);
    R = (1.0 - a) * R + a * att_gain * R;
    const double mlp_gain = sp * sfc / kLipschitzGeluDivisor;  // |gelu(z)| <= |z|
    log10_L += std::log10((1.0 - a) + a * mlp_gain * gelu);
    R = (1.0 - a) * R + a * mlp_gain * R;
  }
  return log10_L + std::log10(sigma("lm_head.weight"));
}

nlohmann::json LipschitzCertificate::to_json() const {
  auto value = [](double lg) { return lg < 300.0 ? nlohmann::json(std::pow(10.0, lg)) : nlohmann::json(nullptr); };
  nlohmann::json j = {{"lipschitz_bound", value(log10_bound)},
                      {"log10_lipschitz_bound", log10_bound},
                      {"input_radius", input_radius}};
  if (log10_bound_wmax) {
    j["lipschitz_bound_wmax"] = value(*log10_bound_wmax);
    j["log10_lipschitz_bound_wmax"] = *log10_bound_wmax;
  }
  return j;
}

LipschitzCertificate lipschitz_certificate(const Config& cfg, const ParamTable& table, std::span<const float> params) {
  return lipschitz_certificate(cfg, table, [&](const std::string& name) {
    const ParamInfo& p = table.get(name);
    return sigma_max_power(params.data() + p.offset, int(p.rows()), int(p.cols()), kCertificateIters);
  });
}

LipschitzCertificate lipschitz_certificate(const Config& cfg, const ParamTable& table,
                                           const std::function<double(const std::string&)>& measured_sigma) {
  LipschitzCertificate c;
  c.input_radius = lipschitz_input_radius(cfg);
  c.log10_bound = log10_lipschitz_bound(cfg, measured_sigma);
  // hammer moves only the top singular pair: sigma_2 may stay above w_max, so it certifies nothing.
  bool all_constrained = cfg.spectral.method != "hammer";
  for (const auto& p : table.entries())
    if (p.is_matrix() && p.role != Role::embed && p.role != Role::pos_embed) all_constrained &= p.constrained;
  if (all_constrained)
    c.log10_bound_wmax = log10_lipschitz_bound(cfg, [&](const std::string& name) {
      const ParamInfo& p = table.get(name);
      return sigma_bound(cfg.spectral, p.role, p.rows(), p.cols());
    });
  return c;
}

}  // namespace pg
