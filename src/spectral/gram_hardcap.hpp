// Hard cap through the small Gram matrix, for strongly rectangular W (an LM head [V, C] with
// V >> C): sigma -> min(sigma, beta) for every singular value, exactly up to rounding.
//
// For W = U S V^T (rows x cols, cols <= rows; the wide case is the transpose):
//   hardcap(W) = U min(S, beta) V^T = W M,   M = V diag(min(1, beta / s_i)) V^T = f(W^T W),
// f(lambda) = min(1, beta / sqrt(lambda)). G = W^T W (cols x cols) is formed in float64 and
// diagonalised by cyclic Jacobi rotations (sym_eigen), so the cost is one rows x cols^2 product
// for G and one for W M instead of the two Newton-Schulz matrix signs of the general hard cap
// (about ten products of that size each). Squaring the spectrum loses nothing here: f is 1 below
// beta, so small singular values, whose directions G resolves poorly, are left unchanged.
// Test: tests/spectral/test_constrain.cpp (against the Jacobi SVD and the matrix-sign hard cap).
#pragma once
#include <vector>

namespace pg {

// Eigen-decomposition of a symmetric n x n float64 matrix A (row-major, destroyed): eigenvalues
// in `values`, eigenvectors as the COLUMNS of `vectors` (n x n row-major). Cyclic Jacobi.
void sym_eigen(std::vector<double>& A, int n, std::vector<double>& values, std::vector<double>& vectors);

void spectral_hardcap_gram(float* W, int rows, int cols, double beta);

}  // namespace pg
