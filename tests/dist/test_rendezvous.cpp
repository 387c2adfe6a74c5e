// The rendezvous over TCP on localhost: the environment a launcher sets, the blob hand-out to
// every rank (rank 0 starting last, so the others must retry), and the timeout when a rank is
// missing or rank 0 never comes.
#include <catch2/catch.hpp>

#include <chrono>
#include <map>
#include <thread>

#include "core/error.hpp"
#include "common/free_port.hpp"
#include "core/rng.hpp"
#include "dist/rendezvous.hpp"

using namespace pg;
using namespace pg::dist;

namespace {

DistEnv env_for(int rank, int world, int port) {
  DistEnv e;
  e.rank = e.local_rank = rank;
  e.world_size = e.local_world_size = world;
  e.master_port = port;
  return e;
}

}  // namespace

TEST_CASE("rendezvous: the environment of a launched rank, and errors naming the variable", "[dist]") {
  std::map<std::string, std::string> vars = {{"RANK", "5"},        {"LOCAL_RANK", "1"},  {"WORLD_SIZE", "8"},
                                             {"LOCAL_WORLD_SIZE", "4"}, {"MASTER_ADDR", "node7"}, {"MASTER_PORT", "29511"}};
  auto get = [&](const char* n) -> const char* {
    auto it = vars.find(n);
    return it == vars.end() ? nullptr : it->second.c_str();
  };
  const DistEnv e = dist_env_from_environment(get);
  REQUIRE(e.rank == 5);
  REQUIRE(e.local_rank == 1);
  REQUIRE(e.world_size == 8);
  REQUIRE(e.local_world_size == 4);
  REQUIRE(e.master_addr == "node7");
  REQUIRE(e.master_port == 29511);

  vars["RANK"] = "8";
  REQUIRE_THROWS_WITH(dist_env_from_environment(get), Catch::Contains("RANK=8"));
  vars["RANK"] = "x1";
  REQUIRE_THROWS_WITH(dist_env_from_environment(get), Catch::Contains("RANK=x1"));
  vars.erase("RANK");
  REQUIRE_THROWS_WITH(dist_env_from_environment(get), Catch::Contains("RANK: not set"));
  vars.clear();
  const DistEnv solo = dist_env_from_environment(get);
  REQUIRE(solo.world_size == 1);
  REQUIRE(solo.rank == 0);
}

TEST_CASE("rendezvous: every rank receives rank 0's blob, also when rank 0 starts last", "[dist]") {
  const uint64_t seed = 41;
  CAPTURE(seed);
  Rng rng(seed);
  std::vector<uint8_t> blob(128);  // the size of an ncclUniqueId
  for (auto& b : blob) b = uint8_t(rng.below(256));
  const int W = 4, port = test::free_port();
  std::vector<std::vector<uint8_t>> got(W);
  std::vector<std::string> errors(W);
  std::vector<std::thread> ranks;
  for (int r = W - 1; r >= 0; --r) {
    ranks.emplace_back([&, r] {
      try {
        got[size_t(r)] = exchange_blob(env_for(r, W, port), r == 0 ? blob : std::vector<uint8_t>{}, 20.0);
      } catch (const std::exception& e) {
        errors[size_t(r)] = e.what();
      }
    });
    if (r == 1) std::this_thread::sleep_for(std::chrono::milliseconds(300));  // others retry meanwhile
  }
  for (auto& t : ranks) t.join();
  for (int r = 0; r < W; ++r) {
    CAPTURE(r, errors[size_t(r)]);
    REQUIRE(errors[size_t(r)].empty());
    REQUIRE(got[size_t(r)] == blob);
  }
}

TEST_CASE("rendezvous: a missing rank, or a missing rank 0, is a one-line error after dist.timeout_s", "[dist]") {
  const int port = test::free_port();
  // World of 3, rank 2 never starts: rank 0 names it; rank 1, connected, is told nothing and
  // gives up too.
  std::string err0, err1;
  const auto t0 = std::chrono::steady_clock::now();
  std::thread r1([&] {
    try {
      exchange_blob(env_for(1, 3, port), {}, 1.0);
    } catch (const UserError& e) {
      err1 = e.what();
    }
  });
  try {
    exchange_blob(env_for(0, 3, port), std::vector<uint8_t>(16, 7), 0.5);
  } catch (const UserError& e) {
    err0 = e.what();
  }
  r1.join();
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CAPTURE(err0, err1);
  REQUIRE(err0.find("2 of 3 ranks arrived (missing: 2)") != std::string::npos);
  REQUIRE(err0.find("dist.timeout_s = 0.5 s") != std::string::npos);
  REQUIRE(err0.find('\n') == std::string::npos);
  REQUIRE(!err1.empty());
  REQUIRE(waited < 5.0);

  // No rank 0 at all: a joining rank reports the address it could not reach.
  const int port2 = test::free_port();
  REQUIRE_THROWS_WITH(exchange_blob(env_for(2, 3, port2), {}, 0.4),
                      Catch::Contains("could not reach rank 0 at 127.0.0.1:" + std::to_string(port2)) &&
                          Catch::Contains("dist.timeout_s = 0.4 s"));
}
