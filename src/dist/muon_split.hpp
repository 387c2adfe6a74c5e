// Distributed Muon's Newton-Schulz step: the matrices' orthogonalisations are split over the
// ranks, each rank runs its share, and every rank receives every result.
//
// Cost model: NS on an m x n matrix (oriented wide, m <= n) costs per iteration
//   A = X X^T: 2 m^2 n,  A A: 2 m^3,  B X: 2 m^2 n   ->  4 m^2 n + 2 m^3 FLOPs
// (the iteration count is the same for every matrix, so it drops out of the balance).
// Assignment: the matrices are listed shape group by shape group (groups in order of first
// appearance, members in index order, as NsGroups batches them), and that list is cut into W
// contiguous runs at the prefix-FLOP sums closest to k * total / W. So a rank gets whole shape
// groups or a contiguous slice of one (still one batched call per group on that rank), and its
// load is within one matrix's cost of total / W. Deterministic: every rank computes the same
// assignment from the shapes alone.
//
// Exchange: rank r packs its results (its matrices in list order) into a buffer of
// L = max over ranks of the elements owned, zero-padded; one all_gather of L per rank; every
// rank unpacks all of them into place. Each matrix is orthogonalised by the same code it would
// run on a single rank, and NS treats matrices independently, so the result is bitwise the
// single-rank one (tests/dist/test_muon_split.cpp).
//
// Wiring into Muon::step (optim/muon.hpp): after the gradient all-reduce every rank forms the
// momentum and Nesterov direction D of every matrix (elementwise, cheap), calls
// orthogonalize_distributed over the D's with a callback that runs NsGroups on the subset it is
// given, then applies W <- W (1 - lr wd) - lr scale O to every matrix, as on one rank.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "dist/comm.hpp"

namespace pg::dist {

struct NsMatrix {
  int rows = 0, cols = 0;
};

double ns_flops_per_iteration(NsMatrix s);

// owner[i] = the rank that orthogonalises matrix i (see above).
std::vector<int> assign_ns_work(std::span<const NsMatrix> shapes, int world_size);

// The orthogonalisation of a subset: mats[k] is a row-major matrix of shape shapes[k]; replace
// each by its NS result, in place.
using OrthogonalizeFn = std::function<void(std::span<float* const> mats, std::span<const NsMatrix> shapes)>;

// In place on every rank: mats[i] <- NS(mats[i]) for all i, each computed once, on its owner.
// Every rank passes the same shapes; mats[i] must hold the same input on every rank (only the
// owner's is read).
void orthogonalize_distributed(Comm& comm, std::span<float* const> mats, std::span<const NsMatrix> shapes,
                               const OrthogonalizeFn& orthogonalize);

}  // namespace pg::dist
