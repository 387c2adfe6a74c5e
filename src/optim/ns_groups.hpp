// Newton-Schulz over many matrices at once, grouped by oriented shape.
//
// Every matrix is oriented wide (m = min(rows, cols), n = max(rows, cols); a tall one is
// transposed in and out) and all matrices of one (m, n) are stacked in one contiguous
// [G, m, n] buffer, so a group is one batched call: on a GPU one strided-batched GEMM per product
// per iteration, on the CPU the group's matrices split over the thread pool. Matrices are
// independent, so the result equals newton_schulz_cpu on each matrix alone, bit for bit, for any
// grouping and thread count (tested). Groups are in order of first appearance; members in the
// order the matrices were given. Buffers are sized once, at construction.
// Test: tests/optim/test_muon.cpp.
#pragma once
#include <span>
#include <vector>

#include "optim/newton_schulz.hpp"

namespace pg {

struct MatrixShape {
  int rows, cols;
};

class NsGroups {
 public:
  struct Group {
    int m, n;                  // oriented: m <= n
    std::vector<int> members;  // indices into the shapes given at construction
    std::vector<bool> tall;    // members[i] is stored transposed in the buffer
    std::vector<float> buffer; // [members.size(), m, n]
  };

  explicit NsGroups(std::span<const MatrixShape> shapes);
  const std::vector<Group>& groups() const { return groups_; }

  // In place: mats[i] (row-major, shapes[i]) <- NS(mats[i]) with `schedule` at `prec`, input
  // divided by ||X||_F * safety + 1e-7 (see newton_schulz.hpp).
  void run(std::span<float* const> mats, std::span<const NsCoeffs> schedule, NsPrecision prec, double safety);

 private:
  std::vector<MatrixShape> shapes_;
  std::vector<Group> groups_;
};

}  // namespace pg
