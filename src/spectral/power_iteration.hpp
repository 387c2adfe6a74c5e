// Power iteration for the top singular triple of a float32 row-major W (rows x cols), with
// float64 accumulation. Test: tests/spectral/test_power_iteration.cpp.
//
// One iteration:  u <- W v / ||W v||;  v <- W^T u / ||W^T u||;  sigma_hat = ||W^T u||.
// sigma_hat = ||W^T u|| for a unit u, so it never exceeds sigma_1 (an under-estimate whose
// relative error shrinks by about (sigma_2 / sigma_1)^4 per iteration). After the last iteration u^T W v = sigma_hat and
// W^T u = sigma_hat v exactly (up to rounding), which is what the hammer projection relies on.
// u and v persist between calls (warm start: W changes little per optimizer step, so a few
// iterations suffice; keep them in checkpoints). v is the vector the next call starts from.
#pragma once

namespace pg {

// u[rows], v[cols] in/out. A v that is all zero is replaced by a fixed pseudo-random unit vector
// (seeded by the shape, so runs are reproducible); u is then overwritten by the first iteration.
// iters >= 1. Returns sigma_hat (0 for W = 0, leaving u and v unchanged).
double power_iteration(const float* W, int rows, int cols, float* u, float* v, int iters);

// Monitoring fallback: power iteration on W^T W from a fixed start, sigma_1 ~ ||W v|| for the
// final unit v. Under-estimates sigma_1; its relative error also shrinks by about (s2/s1)^4 per iteration.
double sigma_max_power(const float* W, int rows, int cols, int iters);

}  // namespace pg
