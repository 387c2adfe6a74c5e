// The in-process Comm against a serial reference: every collective, dtype and op, on 1..4 ranks,
// in place and not. The reference sums in rank order, which is the in-process comm's contract,
// so results must match bitwise (and so be independent of thread timing).
#include <catch2/catch.hpp>

#include <bit>
#include <chrono>
#include <stdexcept>
#include <thread>

#include "core/rng.hpp"
#include "dist/in_process_comm.hpp"

using namespace pg;
using namespace pg::dist;

namespace {

std::vector<std::vector<float>> random_inputs(int W, int64_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<std::vector<float>> x(static_cast<size_t>(W), std::vector<float>(static_cast<size_t>(n)));
  for (auto& v : x)
    for (float& e : v) e = float(rng.normal());
  return x;
}

// Element i summed over ranks 0..W-1 in order (fp32), then / W for avg.
std::vector<float> reference(const std::vector<std::vector<float>>& x, ReduceOp op) {
  std::vector<float> out(x[0]);
  for (size_t r = 1; r < x.size(); ++r)
    for (size_t i = 0; i < out.size(); ++i) out[i] += x[r][i];
  if (op == ReduceOp::avg)
    for (float& e : out) e /= float(x.size());
  return out;
}

}  // namespace

TEST_CASE("comm: all_reduce (f32, f64, bf16; sum, avg) equals the rank-order serial sum bitwise", "[dist]") {
  const uint64_t seed = GENERATE(11u, 12u);
  const int W = GENERATE(1, 2, 3, 4);
  const int64_t n = 1001;  // not a multiple of W: uneven chunks
  CAPTURE(seed, W);
  for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg}) {
    const auto x = random_inputs(W, n, seed);
    const auto ref = reference(x, op);
    std::vector<std::vector<float>> f32 = x;
    std::vector<std::vector<double>> f64(static_cast<size_t>(W));
    std::vector<std::vector<uint16_t>> b16(static_cast<size_t>(W));
    for (int r = 0; r < W; ++r) {
      f64[size_t(r)].assign(x[size_t(r)].begin(), x[size_t(r)].end());
      for (float e : x[size_t(r)]) b16[size_t(r)].push_back(bf16_bits(e));
    }
    run_ranks(W, 30, [&](Comm& c) {
      c.all_reduce(std::span<float>(f32[size_t(c.rank())]), op);
      c.all_reduce(std::span<double>(f64[size_t(c.rank())]), op);
      c.all_reduce_bf16(b16[size_t(c.rank())], op);
    });
    for (int r = 0; r < W; ++r)
      for (int64_t i = 0; i < n; ++i) {
        REQUIRE(f32[size_t(r)][size_t(i)] == ref[size_t(i)]);
        double d = 0;
        for (int s = 0; s < W; ++s) d += double(x[size_t(s)][size_t(i)]);
        if (op == ReduceOp::avg) d /= W;
        REQUIRE(f64[size_t(r)][size_t(i)] == d);
        float b = 0;
        for (int s = 0; s < W; ++s) b += bf16_value(bf16_bits(x[size_t(s)][size_t(i)]));
        if (op == ReduceOp::avg) b /= float(W);
        REQUIRE(b16[size_t(r)][size_t(i)] == (W == 1 ? bf16_bits(x[0][size_t(i)]) : bf16_bits(b)));
      }
  }
}

TEST_CASE("comm: reduce_scatter and all_gather, out of place and in place, match the serial reference", "[dist]") {
  const uint64_t seed = 21;
  const int W = GENERATE(1, 2, 3, 4);
  const int64_t n = 67;  // per-rank part
  CAPTURE(seed, W);
  const auto x = random_inputs(W, n * W, seed);
  const auto ref = reference(x, ReduceOp::avg);
  std::vector<std::vector<float>> out(static_cast<size_t>(W), std::vector<float>(static_cast<size_t>(n)));
  std::vector<std::vector<float>> inplace = x, gathered(static_cast<size_t>(W)), gathered_inplace = x;
  run_ranks(W, 30, [&](Comm& c) {
    const int r = c.rank();
    c.reduce_scatter(x[size_t(r)].data(), out[size_t(r)].data(), n, DType::f32, ReduceOp::avg);
    float* buf = inplace[size_t(r)].data();
    c.reduce_scatter(buf, buf + r * n, n, DType::f32, ReduceOp::avg);
    // all_gather of each rank's reduced part rebuilds the whole reduced buffer.
    gathered[size_t(r)].assign(size_t(n * W), -1.0f);
    c.all_gather(out[size_t(r)].data(), gathered[size_t(r)].data(), n, DType::f32);
    float* g = gathered_inplace[size_t(r)].data();
    std::copy(out[size_t(r)].begin(), out[size_t(r)].end(), g + r * n);
    c.all_gather(g + r * n, g, n, DType::f32);
  });
  for (int r = 0; r < W; ++r) {
    for (int64_t i = 0; i < n; ++i) {
      REQUIRE(out[size_t(r)][size_t(i)] == ref[size_t(r * n + i)]);
      REQUIRE(inplace[size_t(r)][size_t(r * n + i)] == ref[size_t(r * n + i)]);
    }
    REQUIRE(gathered[size_t(r)] == ref);
    REQUIRE(gathered_inplace[size_t(r)] == ref);
  }
}

TEST_CASE("comm: broadcast copies the root's buffer; barrier orders the ranks", "[dist]") {
  const int W = GENERATE(2, 3, 4);
  const int root = W - 1;
  auto x = random_inputs(W, 300, 31);
  const auto want = x[size_t(root)];
  std::vector<int> before(static_cast<size_t>(W), 0), seen(static_cast<size_t>(W), 0);
  run_ranks(W, 30, [&](Comm& c) {
    c.broadcast(std::span<float>(x[size_t(c.rank())]), root);
    // Rank r sleeps r ms before its write; after the barrier every rank sees every write.
    std::this_thread::sleep_for(std::chrono::milliseconds(c.rank()));
    before[size_t(c.rank())] = 1;
    c.barrier();
    int s = 0;
    for (int v : before) s += v;
    seen[size_t(c.rank())] = s;
  });
  for (int r = 0; r < W; ++r) {
    REQUIRE(x[size_t(r)] == want);
    REQUIRE(seen[size_t(r)] == W);
  }
}

TEST_CASE("comm: a rank that throws fails the group without hanging; run_ranks rethrows its error", "[dist]") {
  const int W = 3;
  std::vector<float> bufs(3 * 8, 1.0f);
  REQUIRE_THROWS_WITH(run_ranks(W, 30,
                                [&](Comm& c) {
                                  if (c.rank() == 1) throw std::runtime_error("rank one broke");
                                  for (int i = 0; i < 4; ++i)
                                    c.all_reduce(std::span<float>(bufs.data() + 8 * c.rank(), 8), ReduceOp::sum);
                                }),
                      Catch::Contains("rank one broke"));
  // A rank that never arrives: the others give up after the group's timeout.
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE_THROWS_WITH(run_ranks(2, 0.3,
                                [&](Comm& c) {
                                  if (c.rank() == 0) c.barrier();
                                }),
                      Catch::Contains("waited"));
  REQUIRE(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10));
}
