// Which matrices are spectrally constrained, to what bound, and the projection applied to all of
// them after every optimizer step (config section `spectral`, ALGORITHMS.md section 3). The single
// projections live in projection.hpp; this file picks them per parameter.
//
// A matrix is constrained when spectral.method != none, it is 2-D (3-D expert tensors: each
// [rows, cols] slice) and its role is listed in spectral.roles. Its bound on sigma_1:
//   norm = spectral:  sigma_1 <= w_max(role)
//   norm = rms:       sqrt(n_in / n_out) sigma_1 <= w_max(role), i.e. sigma_1 <= w_max sqrt(rows / cols)
//                     for W[rows = n_out, cols = n_in] (y = x W^T).
// w_max(role) = spectral.w_max_<role> when > 0, else spectral.w_max.
//
// project_constrained, per constrained matrix (slice):
//   normalize  W <- W min(1, w / sigma_hat), sigma_hat by power iteration (spectral.power_iters);
//   hammer     the top pair moved to w;
//   softcap    the soft cap with the coupling strength for k = w (1 - lr wd) + eta, where eta bounds
//              the spectral norm of this step's Muon update (muon_update_spectral_bound);
//   hardcap    sigma -> min(sigma, w) for every singular value: the matrix-sign formula, or for
//              strongly rectangular matrices (aspect >= kGramHardcapAspect, e.g. the LM head) the
//              cheaper exact Gram-matrix form (gram_hardcap.hpp).
// Power iteration under-estimates sigma_1, so normalize and hammer hold the bound only as well as
// the iteration converged: a cold start (no stored vectors) runs kColdStartIters extra iterations,
// and with spectral.warm_start the vectors persist between steps (W moves little per step), so the
// estimate keeps converging; they are saved in checkpoints as "<name>.power_u" / "<name>.power_v".
//
// model.variant = lipschitz also max-norm projects the embeddings after every step: each row of
// wte (and wpe) is scaled to RMS <= 1, which bounds the residual stream entering block 0.
#pragma once
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "io/safetensors.hpp"
#include "model/param_table.hpp"

namespace pg {

inline constexpr int kColdStartIters = 20;
inline constexpr int kGramHardcapAspect = 8;

bool role_constrained(const SpectralConfig& s, Role role);  // role listed in spectral.roles (any method)
// Marks p.constrained for every matrix that project_constrained will project.
void mark_constrained(const Config& cfg, ParamTable& table);
inline ParamTable with_constraints(const Config& cfg, ParamTable table) {
  mark_constrained(cfg, table);
  return table;
}
// The bound on sigma_1 of one [rows, cols] matrix (slice) of role `role` (see above).
double sigma_bound(const SpectralConfig& s, Role role, int64_t rows, int64_t cols);
// Number of [rows, cols] slices in a tensor (1 for 2-D, the leading dims' product for 3-D).
int64_t matrix_slices(const ParamInfo& p);

// Largest spectral norm Muon's update lr * scale * NS(D) can have: lr * scale * the NS schedule's
// maximum output (ns_schedule_max_output), with Muon's own schedule (muon_ns_schedule: optim.
// ns_schedule, ns_steps, the safety of optim.ns_precision) and scale rule (optim.muon_scale).
double muon_update_spectral_bound(const Config& cfg, int64_t rows, int64_t cols, double lr);

// Power-iteration vectors per constrained matrix, keyed by parameter name (slices back to back).
class SpectralState {
 public:
  // Vectors for (name, slice), allocated zero (= cold start) on first use.
  float* u(const ParamInfo& p, int64_t slice);
  float* v(const ParamInfo& p, int64_t slice);
  bool warm(const ParamInfo& p) const;  // vectors exist and are not all zero
  void clear() { vecs_.clear(); }

  // For optimizer.safetensors: "<name>.power_u" [slices, rows], "<name>.power_v" [slices, cols].
  std::vector<io::TensorRef> tensor_refs(const ParamTable& table) const;
  // Reads the vectors of every constrained matrix that the file holds (none: cold start).
  void load(const io::SafetensorsReader& r, const ParamTable& table);

 private:
  struct Vecs {
    std::vector<float> u, v;
  };
  Vecs& at(const ParamInfo& p);
  std::map<std::string, Vecs> vecs_;
};

// Applies spectral.method to every constrained matrix (p.constrained) of the flat params, and the
// embedding max-norm projection for the lipschitz variant. lr is this step's learning rate (the
// soft cap's coupling needs it); step is for messages.
void project_constrained(const ParamTable& table, std::span<float> params, SpectralState& state, const Config& cfg,
                         double lr, int64_t step);

// Rows of an embedding [rows, cols] scaled to RMS <= 1 (norm <= sqrt(cols)).
void max_norm_rows(float* E, int64_t rows, int64_t cols);

}  // namespace pg
