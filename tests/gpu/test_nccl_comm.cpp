// NcclComm on the GPUs of this machine: one rank per GPU as threads of this process, through the
// whole start-up (TCP rendezvous of the ncclUniqueId, ncclCommInitRank) and every collective,
// against a serial reference. NCCL reduces in its own order (ring or tree), so sums agree with
// the rank-order reference to fp32 rounding (W ulps), not bitwise. One GPU: world size 1.
// Skipped (with a message) where no GPU is present or the build has no NCCL.
#include <catch2/catch.hpp>

#ifdef POLARGPT_WITH_NCCL
#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include "common/free_port.hpp"
#include "core/rng.hpp"
#include "dist/nccl_comm.hpp"

using namespace pg;
using namespace pg::dist;

namespace {

}  // namespace

TEST_CASE("nccl: collectives over every GPU of this machine match the serial reference", "[gpu][dist]") {
  int n_gpu = 0;
  if (cudaGetDeviceCount(&n_gpu) != cudaSuccess || n_gpu == 0) {
    WARN("no GPU: skipped");
    return;
  }
  const int W = std::min(n_gpu, 8);
  const int64_t n = 4099;  // per-rank part of reduce-scatter / all-gather
  const uint64_t seed = 3;
  CAPTURE(W, seed);
  Rng rng(seed);
  std::vector<std::vector<float>> x(static_cast<size_t>(W), std::vector<float>(static_cast<size_t>(n * W)));
  for (auto& v : x)
    for (float& e : v) e = float(rng.normal());
  std::vector<float> sum(static_cast<size_t>(n * W), 0.0f);
  for (const auto& v : x)
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += v[i];

  const int port = test::free_port();
  std::vector<std::vector<float>> reduced(static_cast<size_t>(W)), scattered(static_cast<size_t>(W)),
      gathered(static_cast<size_t>(W)), bcast(static_cast<size_t>(W));
  std::vector<std::string> errors(static_cast<size_t>(W));
  auto rank_main = [&](int r) {
    try {
      DistEnv env;
      env.rank = env.local_rank = r;
      env.world_size = env.local_world_size = W;
      env.master_port = port;
      NcclComm comm(env, 60.0);
      const size_t bytes = size_t(n * W) * sizeof(float);
      float *d_buf = nullptr, *d_part = nullptr;
      REQUIRE(cudaMalloc(&d_buf, bytes) == cudaSuccess);
      REQUIRE(cudaMalloc(&d_part, bytes / size_t(W)) == cudaSuccess);
      auto up = [&](const std::vector<float>& h) { cudaMemcpy(d_buf, h.data(), bytes, cudaMemcpyHostToDevice); };
      auto down = [&](float* d, size_t count) {
        std::vector<float> h(count);
        comm.synchronize();
        cudaMemcpy(h.data(), d, count * sizeof(float), cudaMemcpyDeviceToHost);
        return h;
      };
      up(x[size_t(r)]);
      comm.all_reduce(d_buf, n * W, DType::f32, ReduceOp::avg);
      reduced[size_t(r)] = down(d_buf, size_t(n * W));
      up(x[size_t(r)]);
      comm.reduce_scatter(d_buf, d_part, n, DType::f32, ReduceOp::sum);
      scattered[size_t(r)] = down(d_part, size_t(n));
      comm.all_gather(d_part, d_buf, n, DType::f32);
      gathered[size_t(r)] = down(d_buf, size_t(n * W));
      up(x[size_t(r)]);
      comm.broadcast(d_buf, n * W, DType::f32, W - 1);
      bcast[size_t(r)] = down(d_buf, size_t(n * W));
      comm.barrier();
      cudaFree(d_buf);
      cudaFree(d_part);
    } catch (const std::exception& e) {
      errors[size_t(r)] = e.what();
    }
  };
  std::vector<std::thread> threads;
  for (int r = 0; r < W; ++r) threads.emplace_back(rank_main, r);
  for (auto& t : threads) t.join();
  const float tol = 1e-6f * float(W) * 8.0f;
  for (int r = 0; r < W; ++r) {
    CAPTURE(r, errors[size_t(r)]);
    REQUIRE(errors[size_t(r)].empty());
    for (size_t i = 0; i < sum.size(); ++i) {
      REQUIRE(std::abs(reduced[size_t(r)][i] - sum[i] / float(W)) <= tol * (1 + std::abs(sum[i])));
      REQUIRE(std::abs(gathered[size_t(r)][i] - sum[i]) <= tol * (1 + std::abs(sum[i])));
      REQUIRE(bcast[size_t(r)][i] == x[size_t(W - 1)][i]);
    }
    for (int64_t i = 0; i < n; ++i)
      REQUIRE(std::abs(scattered[size_t(r)][size_t(i)] - sum[size_t(r * n + i)]) <=
              tol * (1 + std::abs(sum[size_t(r * n + i)])));
    REQUIRE(reduced[size_t(r)] == reduced[0]);  // every rank holds the same bytes
  }
}

#else
TEST_CASE("nccl: collectives over every GPU of this machine match the serial reference", "[gpu][dist]") {
  WARN("this build has no NCCL (POLARGPT_WITH_NCCL): skipped");
}
#endif
