// Distributed Muon's Newton-Schulz split: the FLOP-balanced assignment (whole shape groups or
// contiguous slices of them) and the distributed orthogonalisation, which must equal the
// single-rank one bit for bit on 1..4 ranks.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>

#include "core/rng.hpp"
#include "dist/in_process_comm.hpp"
#include "dist/muon_split.hpp"
#include "optim/newton_schulz.hpp"

using namespace pg;
using namespace pg::dist;

namespace {

// A GPT-like mix: attention (C x C) x 4 per layer, MLP fc (4C x C) and proj (C x 4C), a few odd
// shapes; tall and wide matrices of one oriented shape share a group.
std::vector<NsMatrix> mixed_shapes() {
  std::vector<NsMatrix> s;
  for (int l = 0; l < 3; ++l) {
    for (int k = 0; k < 4; ++k) s.push_back({16, 16});
    s.push_back({64, 16});
    s.push_back({16, 64});
  }
  s.push_back({24, 40});
  s.push_back({40, 24});
  s.push_back({8, 8});
  return s;
}

void ns_each(std::span<float* const> mats, std::span<const NsMatrix> shapes) {
  const auto sched = ns_schedule_keller5(5);
  for (size_t k = 0; k < mats.size(); ++k)
    newton_schulz_cpu(mats[k], 1, shapes[k].rows, shapes[k].cols, sched, NsPrecision::bf16, 1.01);
}

}  // namespace

TEST_CASE("muon split: every matrix has one owner, shares are contiguous in group order and FLOP-balanced",
          "[dist]") {
  const auto shapes = mixed_shapes();
  double total = 0, largest = 0;
  for (const auto& s : shapes) {
    total += ns_flops_per_iteration(s);
    largest = std::max(largest, ns_flops_per_iteration(s));
  }
  REQUIRE(ns_flops_per_iteration({16, 64}) == ns_flops_per_iteration({64, 16}));
  REQUIRE(ns_flops_per_iteration({16, 64}) == 4.0 * 16 * 16 * 64 + 2.0 * 16 * 16 * 16);
  for (int W = 1; W <= 6; ++W) {
    CAPTURE(W);
    const auto owner = assign_ns_work(shapes, W);
    REQUIRE(owner.size() == shapes.size());
    std::vector<double> load(static_cast<size_t>(W), 0.0);
    for (size_t i = 0; i < shapes.size(); ++i) {
      REQUIRE(owner[i] >= 0);
      REQUIRE(owner[i] < W);
      load[size_t(owner[i])] += ns_flops_per_iteration(shapes[i]);
    }
    for (double l : load) REQUIRE(std::abs(l - total / W) <= largest);
    // Within a shape group, owners never decrease with the member index (contiguous slices).
    std::map<std::pair<int, int>, int> last;
    for (size_t i = 0; i < shapes.size(); ++i) {
      const auto key = std::make_pair(std::min(shapes[i].rows, shapes[i].cols), std::max(shapes[i].rows, shapes[i].cols));
      if (last.count(key)) REQUIRE(owner[i] >= last[key]);
      last[key] = owner[i];
    }
  }
}

TEST_CASE("muon split: the distributed Newton-Schulz update equals the single-rank one bitwise", "[dist]") {
  const uint64_t seed = GENERATE(1u, 2u);
  const int W = GENERATE(1, 2, 3, 4);
  CAPTURE(seed, W);
  const auto shapes = mixed_shapes();
  Rng rng(seed);
  std::vector<std::vector<float>> input;
  for (const auto& s : shapes) {
    input.emplace_back(size_t(s.rows) * size_t(s.cols));
    for (float& x : input.back()) x = float(rng.normal());
  }
  // Single rank: every matrix on its own.
  std::vector<std::vector<float>> want = input;
  std::vector<float*> ptrs;
  for (auto& m : want) ptrs.push_back(m.data());
  ns_each(ptrs, shapes);

  std::vector<std::vector<std::vector<float>>> got(static_cast<size_t>(W), input);
  std::vector<int> calls(static_cast<size_t>(W), 0);
  run_ranks(W, 30, [&](Comm& c) {
    std::vector<float*> mine;
    for (auto& m : got[size_t(c.rank())]) mine.push_back(m.data());
    orthogonalize_distributed(c, mine, shapes, [&](std::span<float* const> m, std::span<const NsMatrix> s) {
      calls[size_t(c.rank())] += int(m.size());
      ns_each(m, s);
    });
  });
  int total_calls = 0;
  for (int r = 0; r < W; ++r) {
    REQUIRE(got[size_t(r)] == want);
    total_calls += calls[size_t(r)];
  }
  REQUIRE(total_calls == int(shapes.size()));  // each matrix orthogonalised exactly once
}
