// Spectral projections applied after each optimizer step to a constrained matrix W (float32,
// row-major rows x cols; batched ones take `batch` contiguous matrices of one shape), so that
// sigma_max(W) <= w_max. Test: tests/spectral/test_projection.cpp.
//
// normalize  W <- W * min(1, w_max / sigma_hat). Shrinks the whole spectrum.
// hammer     if sigma_hat > w_max: W <- W + (w_max - sigma_hat) u v^T with (u, v, sigma_hat) from
//            power_iteration, for which W^T u = sigma_hat v: the top pair moves to w_max, the rest
//            of the spectrum stays. Bounds sigma_1 only; sigma_2 may still exceed w_max, and an
//            unconverged u, v leaves a residual of order (sigma_hat - w_max) * angle error.
//
// soft cap   M <- M - a M M^T M;  M <- M + a M M^T M  (on the wide side: the Gram matrix is
//            min(rows, cols)^2). Per singular value: p1(s) = s - a s^3, p2(y) = y + a y^3,
//            f(s) = p2(p1(s)) = s - 3a^2 s^5 + 3a^3 s^7 - a^4 s^9 = s * phi(a s^2) with
//            phi(t) = 1 - 3t^2 + 3t^3 - t^4 = (1 - t)(1 + t - 2t^2 + t^3).
//   Coupling. After W <- W(1 - lr wd) - lr scale O a singular value is at most
//   k = w_max (1 - lr wd) + eta, eta = lr * scale * max NS output (ns_schedule_max_output), times a
//   1.05 margin for rounding (softcap_bound_k). ALGORITHMS.md picks a as the smallest
//   non-negative root of f(k) = w_max. Derivation of when that is right:
//     - With t = a k^2 the quartic -k^9 a^4 + 3k^7 a^3 - 3k^5 a^2 + (k - w_max) = 0 reads
//       phi(t) = w_max / k. phi' = -t (4t^2 - 9t + 6) < 0 for t > 0 (the quadratic has no real
//       root), phi(0) = 1, phi(1) = 0: for 0 < w_max < k there is exactly one positive root
//       t* in (0, 1), so "no root, a = 1" never happens.
//     - f is not monotone: p1 peaks at s_p = 1/sqrt(3a) (t = 1/3), where f = (62/81) s_p, and
//       f falls after it, turning negative for t > 1. If t* <= 1/3, i.e. k <= (81/62) w_max
//       = 1.3065 w_max, f is increasing on [0, k] and the root maps every s <= k to <= w_max.
//     - If k > 1.3065 w_max the root puts the peak f(s_p) = (62/81)/sqrt(3a) above w_max (for
//       inputs between s_p and k): ALGORITHMS.md's rule is wrong there. The smallest a that bounds
//       [0, k] is then a_peak = (62/81)^2 / (3 w_max^2) (peak exactly at w_max); it holds while
//       |f(s)| <= w_max on the negative branch: phi(4/3) = -31/81 gives f(2 s_p) = -w_max, so up to
//       k = softcap_max_k(w_max) = (81/31) w_max = 2.6129 w_max. A larger a only lowers that
//       crossing (with u = a s^2 > 1, s = w_max / |phi(u)| where sqrt(u)|phi(u)| = sqrt(a) w_max
//       grows with a), so beyond it no a of this form works; a_peak is returned as the best effort.
//   In training lr * scale * 1.2 is far below w_max, so k / w_max is close to 1 and t* is small.
//
// hard cap   sigma -> min(sigma, beta) for every singular value, from min(b, s) = (b + s - |b - s|)/2:
//            with O = msign(W) and S = msign(beta I - O W^T) (wide side; on the tall side
//            beta I - O^T W and D S in place of S D),
//              hardcap(W) = 1/2 [beta O + W - S D],  D = beta O - W.
//            With W = U Sigma V^T and NS giving O = U F V^T (F = the composite at each sigma):
//            O W^T = U F Sigma U^T, S = U sign(beta - F Sigma) U^T, S D = U sign(..) (beta F - Sigma) V^T,
//            so each sigma maps to 1/2 [beta f + s - sign(beta - f s) (beta f - s)]: exactly s when
//            f s < beta (whatever f is: O only needs to be accurate for s >= beta), beta f otherwise.
//   Both msigns are float32 Polar Express with ell = 1e-4 (safety 1.02, cushion 0.02), 10 steps
//   by default (it needs 9+ to converge on [1e-4, 1]: 8 steps leave 1.3e-4, 10 steps 5e-15).
//   The sign h(x) of a small eigenvalue x = |beta - s| / N of beta I - O W^T is inexact, which
//   costs |beta - s| (1 - h(x)) / 2 <= G N / 2 with N = ||beta I - O W^T||_F and
//   G = max_x x (1 - h(x)) = 3.5e-6 for 10 steps (1.0e-6 for 12; ell 1e-3 would give 1.3e-5;
//   keller5 does not converge at all). The bound is attained: measured 1.75e-6 N, ~2.5e-5 beta
//   for 48-wide matrices with sigma up to 10 beta; values just above beta end up to that much
//   above it. Away from beta only float32 rounding remains (~1e-7 N). The symmetric part of
//   beta I - O W^T is used, which removes rounding noise from the second msign's input.
#pragma once

namespace pg {

void spectral_normalize(float* W, int rows, int cols, double sigma_hat, double w_max);
void spectral_hammer(float* W, int rows, int cols, const float* u, const float* v, double sigma_hat, double w_max);

// The soft cap's a for the bound k (see above): 0 if k <= w_max; the root of the quartic if
// k <= 1.3065 w_max; a_peak beyond. w_max > 0.
double softcap_alpha(double k, double w_max);
// Largest k for which some a keeps every s <= k at or below w_max: (81/31) w_max.
double softcap_max_k(double w_max);
// k = w_max (1 - lr weight_decay) + 1.05 update_spectral_bound, with update_spectral_bound the
// largest spectral norm an update can have: lr * scale * ns_schedule_max_output(schedule).
double softcap_bound_k(double w_max, double lr, double weight_decay, double update_spectral_bound);
void spectral_softcap(float* W, int batch, int rows, int cols, double alpha);

// The hard cap's msign schedule: Polar Express, kHardcapNsSteps steps on [kHardcapEll, 1],
// safety 1.02, cushion 0.02 (see above).
inline constexpr double kHardcapEll = 1e-4;
inline constexpr int kHardcapNsSteps = 10;

void spectral_hardcap(float* W, int batch, int rows, int cols, double beta, int ns_steps = kHardcapNsSteps);
// float64 path (tests and reference): the same with float64 Newton-Schulz.
void spectral_hardcap(double* W, int batch, int rows, int cols, double beta, int ns_steps = kHardcapNsSteps);

}  // namespace pg
