// Cheap sigma_max estimates for monitoring (per-layer sigma_max in spectral.jsonl and the
// Lipschitz certificate's inputs), on float32 row-major W. Test: tests/spectral/test_monitor.cpp.
//
// Polar route: Q ~ msign(W) by Newton-Schulz, then H = Q^T W = V F(S) S V^T is symmetric PSD with
// eigenvalues F(s_i) s_i, F the NS composite at s_i / ||W||_F. Power-iterate v -> Q^T (W v) (H is
// never formed) and read the Rayleigh quotient v^T H v; vectors and sums in float64.
//   "ns5-fast":     keller5 x 5. F in [0.6818, 1.2024] for normalised s >= 3e-3, and since
//                   F(x) x <= 1.2024 x the estimate max_i F(x_i) s_i lies in [0.68, 1.2024] sigma_1
//                   whenever sigma_1 / ||W||_F >= 3e-3 (always true below ~1e5 columns: the top
//                   value is at least ||W||_F / sqrt(rank)). Measured on varied spectra with
//                   sigma_1 / ||W||_F >= 0.2: [0.687, 1.134] sigma_1. Fine for trends and alarms.
//   "ns3-accurate": the classic cubic X <- 1/2 (3I - X X^T) X. Chosen over converged Polar Express
//                   because its composite F is increasing and <= 1 on [0, 1]: F(s) s keeps the
//                   singular values' order, so the estimate is F(x_1) sigma_1 <= sigma_1 (one-sided,
//                   like power iteration), and the number of steps can be set from the shape so
//                   that the bias is bounded: the top normalised value is >= 1/sqrt(min(rows, cols)),
//                   and T steps are taken with F_T(1/sqrt(min(rows, cols))) >= 1 - 1e-5 (7 steps at
//                   16, 12 at 768, 14 at 4096; converges for any input up to sqrt(3), so no safety
//                   factor, good in bf16). Measured bias after convergence: < 4e-8 (float32). Polar Express overshoots (F up to 1 + E) and is not
//                   monotone, so the top eigenvalue of H need not come from sigma_1.
// Fallback: power iteration on W^T W (sigma_max_power, in power_iteration.hpp).
// Both iterate from a fixed pseudo-random start; `iters` power iterations, >= 1. The polar route
// converges on eigenvalues sigma_i (rate sigma_2/sigma_1 per step), the fallback on sigma_i^2, so
// the polar route needs about twice the iterations: with sigma_2/sigma_1 <= 0.9, 50 iterations
// gave ns3-accurate within 9.1e-4 and the fallback within 2.9e-7 of sigma_1. The polar route is
// the one that stays accurate in bf16 on the GPU (its operands are O(1)).
#pragma once
#include <span>
#include <string>

namespace pg {

// method: "ns5-fast" | "ns3-accurate"; UserError otherwise.
double sigma_max_polar(const float* W, int rows, int cols, const std::string& method, int iters);
// `batch` contiguous matrices of one shape, Newton-Schulz run once for the whole batch; out[batch].
void sigma_max_polar_batched(const float* W, int batch, int rows, int cols, const std::string& method,
                             int iters, std::span<double> out);
// Cubic Newton-Schulz steps "ns3-accurate" takes for this shape.
int ns3_accurate_steps(int rows, int cols);

}  // namespace pg
