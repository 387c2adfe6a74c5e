// Newton-Schulz orthogonalisation on the CPU: X <- NS(X) ~ msign(X) = U V^T for X = U S V^T,
// and the coefficient schedules it runs (keller5, Polar Express). Test: tests/optim/test_newton_schulz.cpp.
//
// One step with coefficients (a, b, c), on the wide side (rows <= cols; a tall X is transposed
// in and out):  A = X X^T;  X <- a X + (b A + c A^2) X.
// It maps every singular value through the odd quintic p(s) = a s + b s^3 + c s^5 and keeps the
// singular vectors, so a schedule is judged by its composite p_T(...p_1(s)) on (0, 1]; the input
// is first scaled by 1 / (||X||_F * safety + eps), which puts every singular value in [0, 1].
//
// Schedules
//  keller5: (3.4445, -4.7750, 2.0315) every step. It does not converge: for normalised
//    s >= 3e-3 five steps land in [0.6818, 1.2024] (the maximum 1.2024 is at s = 0.0041, so
//    ALGORITHMS.md's "[0.68, 1.20]" rounds it down); for s >= 1e-2 the maximum is 1.1344; below
//    ~2e-3 the output is < 0.68.
//  polar-express: per step the minimax odd quintic for 1 on the current interval [l, u]
//    (Remez, ns_remez_quintic), composed as in ALGORITHMS.md section 2:
//      lo = max(l, cushion * u); p = remez(lo, u); if lo > l: p *= 2 / (p(l) + p(u));
//      all but the last step: (a, b, c) /= (s, s^3, s^5)  [p(x / s): tolerates s-fold overshoot];
//      l <- p(l) with the divided p; u <- 2 - l.
//    With ell 1e-3, safety 1.02, cushion 0.02 this reproduces ALGORITHMS.md's 5-step vector to
//    ~1e-14. (Updating l with the undivided p instead changes steps 2..5 at the 1e-3 level, so
//    the divided p is the one the vector was built with.) The paper's pre-safety first triple
//    (8.28721201814563, -23.595886519098837, 17.300387312530933) needs the paper's own cushion
//    0.02407327424182761, not 0.02 (0.02 gives 8.3196856154...); safety does not touch step 1
//    before its division, so both facts are tested.
//    Convergence (not in ALGORITHMS.md, which leaves it open): once a step's undivided polynomial
//    is within 1e-6 of 1 on its whole interval, every later step is exactly (15/8, -10/8, 3/8)
//    without safety division: that quintic has p(1) = 1, p'(1) = p''(1) = 0, so it maps 1 - d to
//    1 - 2.5 d^3 and tolerates s up to ~1.5, no safety needed. Without this rule the safety
//    division holds l near 1 - 2e-5 and Remez runs on ever thinner intervals where its 4x4 system
//    is ill-conditioned (coefficients noisy at 1e-8). With ell 1e-3 and safety 1.02 the exact
//    composite is within 2.3e-3 of 1 on [ell, 1] after 6 steps, 6e-8 after 7 and 2e-14 after 8.
//
// Precision (newton_schulz_cpu on float): fp32 is plain sgemm. bf16 / fp16 emulate a GPU that
// runs each product with bf16/fp16 operands, fp32 accumulation and a bf16/fp16 output, fusing
// the additions into the GEMM epilogue (C = alpha*A*B + beta*C, rounded once):
//      X = rnd(X / (||X||_F s + eps))                (norm in fp32/fp64 first)
//      A = rnd(X X^T);  B = rnd(c A A + b A);  X = rnd(B X + a X)
// Three GEMMs per step; X X^T and A A are symmetric, so they run as syrk (half the FLOPs).
#pragma once
#include <span>
#include <string>
#include <vector>

namespace pg {

struct NsCoeffs {
  double a, b, c;  // one step: X <- aX + (bA + cA^2)X, A = XX^T (wide side)
};

std::vector<NsCoeffs> ns_schedule_keller5(int steps = 5);

// Polar Express composition (see above). `steps` >= 1, 0 < ell < 1, safety >= 1, 0 <= cushion < 1.
std::vector<NsCoeffs> ns_schedule_polar_express(int steps, double ell = 1e-3, double safety = 1.02,
                                                double cushion = 0.02);

// By config name: "keller5" | "polar-express" (ell 1e-3, cushion 0.02, the given safety;
// keller5 ignores safety). Throws UserError naming `key` for an unknown name or bad numbers.
std::vector<NsCoeffs> ns_schedule(const std::string& name, int steps, double safety,
                                  const std::string& key = "optim.ns_schedule");

// One Remez solve: the odd quintic p minimising max |p(x) - 1| over [l, u], 0 < l < u.
// *max_error (optional) receives that minimax error E (p(l) = 1 - E). For l/u >= 1 - 5e-6 returns
// (15/8, -10/8, 3/8) scaled to u (E reported as 0).
NsCoeffs ns_remez_quintic(double l, double u, double* max_error = nullptr);

// Composite p_T(...p_1(sigma)).
double ns_schedule_eval(std::span<const NsCoeffs> schedule, double sigma);
// max over sigma in (0, 1] of the composite: dense scan (linear and log grids) then golden-section
// refinement of the best local maxima; 1.2024 for keller5. The soft cap coupling uses it.
double ns_schedule_max_output(std::span<const NsCoeffs> schedule);

enum class NsPrecision { fp32, bf16, fp16 };
// "fp32" | "bf16" | "fp16"; UserError naming `key` otherwise.
NsPrecision parse_ns_precision(const std::string& s, const std::string& key);

// In place on `batch` contiguous row-major matrices, each rows x cols: X_i <- NS(X_i) ~ msign(X_i).
// Normalises by ||X_i||_F * safety + eps (this safety is separate from the one baked into a
// Polar Express schedule; the published recipe uses both, e.g. 1.01 here and in the schedule), orients wide internally (tall ones are transposed in
// and out, so NS(X^T) == NS(X)^T bit for bit), runs `schedule`. Each matrix is independent:
// a batch gives the same bits as one call per matrix.
void newton_schulz_cpu(float* X, int batch, int rows, int cols, std::span<const NsCoeffs> schedule,
                       NsPrecision prec, double safety = 1.0, double eps = 1e-7);
// float64 reference (tests, exact msign for the spectral ops).
void newton_schulz_cpu(double* X, int batch, int rows, int cols, std::span<const NsCoeffs> schedule,
                       double safety = 1.0, double eps = 1e-7);

}  // namespace pg
