// Float64 finite-difference gradient checking, for single ops and for a whole model.
//
// Given a loss L() that reads some parameter arrays, and for each array the analytic gradient
// dL/dparam, gradcheck perturbs every element p in place by ±h, takes the central difference
//   numeric = (L(p + h) - L(p - h)) / 2h
// (error O(h²) from truncation plus about eps·|L|/h from rounding: ~1e-10 for h = 1e-6 and an
// O(1) loss), restores p, and reports per tensor
//   rel_err = ‖analytic − numeric‖₂ / max(‖analytic‖₂, ‖numeric‖₂, tiny)
// over the checked elements, plus the element with the largest |analytic − numeric|.
// A correct float64 gradient of an O(1) loss gives rel_err around 1e-9; a wrong one, rel_err O(1).
//
//   std::vector<double> w = ..., dw = ...;     // dw computed by the backward under test
//   auto results = pg::test::gradcheck([&] { return forward_loss(); },
//                                      {{"w", w.data(), int64_t(w.size()), dw.data()}});
//   pg::test::check_gradients(results, 1e-6);  // one Catch2 CHECK per tensor, with details
//
// Each element costs two calls of L. For large tensors (a whole model) set max_per_tensor to
// check an evenly spaced subset of at most that many elements of each tensor.
// The loss must be a deterministic function of the parameter values (no dropout, no state
// carried between calls), and the analytic gradients must not alias the parameters.
#pragma once
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace pg::test {

struct GradTensor {
  std::string name;
  double* param;       // read by the loss; perturbed in place, restored exactly afterwards
  int64_t n;           // number of elements
  const double* grad;  // analytic gradient of the loss, n elements
};

struct GradCheckOptions {
  double h = 1e-6;             // absolute step of the central difference
  int64_t max_per_tensor = 0;  // 0: check every element; else an evenly spaced subset
  double tiny = 1e-30;         // floor of the denominator of rel_err
};

struct GradCheckResult {
  std::string name;
  int64_t checked = 0;         // elements compared
  double rel_err = 0.0;        // ‖a − n‖ / max(‖a‖, ‖n‖, tiny)
  double norm_analytic = 0.0;  // ‖a‖ over the checked elements
  double norm_numeric = 0.0;   // ‖n‖ over the checked elements
  int64_t worst_index = -1;    // element with the largest |a − n|
  double worst_analytic = 0.0;
  double worst_numeric = 0.0;

  std::string describe() const {
    std::ostringstream os;
    os.precision(6);
    os << name << ": rel_err " << rel_err << " over " << checked << " elements (|analytic| "
       << norm_analytic << ", |numeric| " << norm_numeric << "); worst [" << worst_index
       << "] analytic " << worst_analytic << " vs numeric " << worst_numeric;
    return os.str();
  }
};

inline std::vector<GradCheckResult> gradcheck(const std::function<double()>& loss,
                                              const std::vector<GradTensor>& tensors,
                                              const GradCheckOptions& opt = {}) {
  std::vector<GradCheckResult> results;
  for (const GradTensor& t : tensors) {
    GradCheckResult r;
    r.name = t.name;
    const int64_t count = opt.max_per_tensor > 0 ? std::min(t.n, opt.max_per_tensor) : t.n;
    double diff2 = 0.0, a2 = 0.0, n2 = 0.0, worst = -1.0;
    for (int64_t k = 0; k < count; ++k) {
      const int64_t i = count == t.n ? k : k * t.n / count;
      const double saved = t.param[i];
      t.param[i] = saved + opt.h;
      const double lp = loss();
      t.param[i] = saved - opt.h;
      const double lm = loss();
      t.param[i] = saved;
      const double numeric = (lp - lm) / (2.0 * opt.h);
      const double analytic = t.grad[i];
      const double d = analytic - numeric;
      diff2 += d * d;
      a2 += analytic * analytic;
      n2 += numeric * numeric;
      if (std::abs(d) > worst) {
        worst = std::abs(d);
        r.worst_index = i;
        r.worst_analytic = analytic;
        r.worst_numeric = numeric;
      }
    }
    r.checked = count;
    r.norm_analytic = std::sqrt(a2);
    r.norm_numeric = std::sqrt(n2);
    r.rel_err = std::sqrt(diff2) / std::max({r.norm_analytic, r.norm_numeric, opt.tiny});
    results.push_back(r);
  }
  loss();  // leave whatever the loss computes (activations) consistent with the restored values
  return results;
}

// One Catch2 CHECK per tensor: rel_err < tol, with the tensor's details on failure.
inline void check_gradients(const std::vector<GradCheckResult>& results, double tol) {
  for (const GradCheckResult& r : results) {
    INFO(r.describe());
    CHECK(r.rel_err < tol);
  }
}

inline double worst_rel_err(const std::vector<GradCheckResult>& results) {
  double w = 0.0;
  for (const GradCheckResult& r : results) w = std::max(w, r.rel_err);
  return w;
}

}  // namespace pg::test
