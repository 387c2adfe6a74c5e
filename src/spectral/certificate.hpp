// The Lipschitz certificate of a model.variant = lipschitz network (derivation: docs/lipschitz.md).
//
// f maps the residual stream entering block 0, X[Tn, C] (token + position embedding), to the
// logits [Tn, V]. Norm on sequences: ||X|| = max_t ||x_t||_2. On the domain ||x_t||_2 <= R_0
// (embedding rows of RMS <= 1: R_0 = sqrt(C), 2 sqrt(C) with learned positions) f is L-Lipschitz:
//   a = 1 / (2 n_layer), beta = attn_scale / d_head, H = n_head, and per layer with input bound R:
//     L_att = (s_o / 3) sqrt(H) s_v (1 + 2 beta s_q s_k R^2)
//     R    <- (1 - a) R + a (s_o / 3) sqrt(H) s_v R
//     L_mlp = s_proj s_fc g / kLipschitzGeluDivisor     (g = 1.1289931: GELU's max slope)
//     R    <- (1 - a) R + a (s_proj s_fc / kLipschitzGeluDivisor) R
//   L = prod_l [(1 - a) + a L_att,l] [(1 - a) + a L_mlp,l] * s_head
// with s_X a bound on sigma_1(W_X): the enforced w_max (sigma_bound) or the measured sigma_max.
#pragma once
#include <functional>
#include <optional>
#include <span>
#include <string>

#include <nlohmann/json.hpp>

#include "config/config.hpp"
#include "model/param_table.hpp"

namespace pg {

// Maximum slope of the tanh-approximated GELU (at x = 1.41852).
inline constexpr double kGeluMaxSlope = 1.1289931;

// R_0 of the formula above for this config.
double lipschitz_input_radius(const Config& cfg);

// log10 of the bound L above, with sigma(name) giving s for each weight matrix by parameter name
// ("h.0.attn.q.weight", ..., "lm_head.weight"). Needs model.variant = lipschitz.
double log10_lipschitz_bound(const Config& cfg, const std::function<double(const std::string&)>& sigma);

struct LipschitzCertificate {
  double log10_bound = 0;                      // from measured sigma_max of every matrix
  // From the enforced w_max: when every matrix is constrained by a method that bounds every
  // singular value (normalize, softcap, hardcap; not hammer, which leaves sigma_2 free).
  std::optional<double> log10_bound_wmax;
  double input_radius = 0;                     // R_0
  // {"lipschitz_bound", "log10_lipschitz_bound", "lipschitz_bound_wmax", "log10_lipschitz_bound_wmax",
  //  "input_radius"} (bounds beyond double range are written as null, their log10 always).
  nlohmann::json to_json() const;
};

// Power-iteration iterations behind the measured sigma_max (an estimate that converges from
// below: the measured bound is as tight as that, the w_max one is a guarantee).
inline constexpr int kCertificateIters = 60;

// The certificate of flat params laid out by `table` (with p.constrained marked), measuring every
// weight matrix's sigma_max by power iteration.
LipschitzCertificate lipschitz_certificate(const Config& cfg, const ParamTable& table, std::span<const float> params);
// The same from measured sigma_max per matrix name (the CUDA monitor measures on the device).
LipschitzCertificate lipschitz_certificate(const Config& cfg, const ParamTable& table,
                                           const std::function<double(const std::string&)>& measured_sigma);

}  // namespace pg
