// Power iteration with warm start and the W^T W fallback monitor (see power_iteration.hpp).
#include "spectral/power_iteration.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "core/error.hpp"
#include "spectral/matvec.hpp"

namespace pg {

double power_iteration(const float* W, int rows, int cols, float* u, float* v, int iters) {
  PG_CHECK(rows > 0 && cols > 0 && iters >= 1, "power_iteration: needs a non-empty W and iters >= 1");
  std::vector<double> ud(u, u + rows), vd(v, v + cols);
  if (norm2(vd.data(), cols) == 0.0) random_unit_vector(vd.data(), cols, 0x9e3779b9ull * rows + cols);
  double sigma = 0.0;
  for (int it = 0; it < iters; ++it) {
    matvec(W, rows, cols, vd.data(), ud.data());  // u = W v
    if (normalize_in_place(ud.data(), rows) == 0.0) return 0.0;
    matvec_t(W, rows, cols, ud.data(), vd.data());  // v = W^T u
    sigma = normalize_in_place(vd.data(), cols);
    if (sigma == 0.0) return 0.0;
  }
  for (int i = 0; i < rows; ++i) u[i] = float(ud[i]);
  for (int j = 0; j < cols; ++j) v[j] = float(vd[j]);
  return sigma;
}

double sigma_max_power(const float* W, int rows, int cols, int iters) {
  PG_CHECK(rows > 0 && cols > 0 && iters >= 1, "sigma_max_power: needs a non-empty W and iters >= 1");
  std::vector<double> v(cols), w(rows);
  random_unit_vector(v.data(), cols, 0x51ed270b7ull * cols + rows);
  double sigma = 0.0;
  for (int it = 0; it < iters; ++it) {
    matvec(W, rows, cols, v.data(), w.data());  // w = W v, ||w|| = sqrt(v^T W^T W v)
    sigma = norm2(w.data(), rows);
    if (sigma == 0.0) return 0.0;
    matvec_t(W, rows, cols, w.data(), v.data());  // v <- W^T W v
    normalize_in_place(v.data(), cols);
  }
  matvec(W, rows, cols, v.data(), w.data());
  return std::max(sigma, norm2(w.data(), rows));
}

}  // namespace pg
