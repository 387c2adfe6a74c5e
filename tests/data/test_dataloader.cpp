#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <numeric>
#include <set>

#include "core/error.hpp"
#include "data/dataloader.hpp"

namespace fs = std::filesystem;

namespace {

// Three shards of uneven sizes whose tokens are their position in the concatenation, so a
// batch shows exactly which windows it holds. 1000 tokens, T = 8: n_windows = 999 / 8 = 124.
struct Corpus {
  fs::path dir;
  std::vector<std::string> shards;
  explicit Corpus(const std::string& name) : dir(fs::temp_directory_path() / (name + "_" + std::to_string(::getpid()))) {
    fs::remove_all(dir);
    fs::create_directories(dir);
    int next = 0;
    for (const int size : {300, 17, 683}) {
      std::vector<uint16_t> tokens;
      for (int i = 0; i < size; ++i) tokens.push_back(uint16_t(next++));
      shards.push_back((dir / ("c_" + std::to_string(shards.size()) + ".bin")).string());
      pg::write_shard(shards.back(), tokens);
    }
  }
  ~Corpus() { fs::remove_all(dir); }

  pg::DataLoaderOptions options(int B, bool random, uint64_t seed = 7, int rank = 0, int world = 1) const {
    return {shards, B, 8, random, seed, rank, world};
  }
};

constexpr int T = 8;

struct Batch {
  std::vector<int32_t> inputs, targets;
  bool operator==(const Batch&) const = default;
};

Batch next(pg::DataLoader& dl, int B) {
  Batch b{std::vector<int32_t>(size_t(B) * T), std::vector<int32_t>(size_t(B) * T)};
  dl.next_batch(b.inputs, b.targets);
  return b;
}

// Window index of each row (tokens are positions, windows start at multiples of T).
std::vector<int> windows_of(const Batch& b) {
  std::vector<int> w;
  for (size_t r = 0; r < b.inputs.size() / T; ++r) w.push_back(b.inputs[r * T] / T);
  return w;
}

}  // namespace

TEST_CASE("dataloader: sequential windows go in order, span shards and wrap seamlessly", "[data]") {
  Corpus c("polargpt_test_dl_seq");
  pg::DataLoader dl(pg::DataLoaderOptions(c.options(4, false)));
  REQUIRE(dl.n_tokens() == 1000);
  REQUIRE(dl.n_windows() == 124);
  std::vector<int> seen;
  for (int step = 0; step < 32; ++step) {  // 128 windows: one epoch and 4 more
    const Batch b = next(dl, 4);
    for (size_t r = 0; r < 4; ++r)
      for (int t = 0; t < T; ++t) {
        REQUIRE(b.inputs[r * T + t] == b.inputs[r * T] + t);  // contiguous, across shard ends too
        REQUIRE(b.targets[r * T + t] == b.inputs[r * T + t] + 1);
      }
    for (const int w : windows_of(b)) seen.push_back(w);
  }
  for (int i = 0; i < 128; ++i) REQUIRE(seen[i] == i % 124);
}

TEST_CASE("dataloader: targets are the inputs shifted by one token", "[data]") {
  Corpus c("polargpt_test_dl_shift");
  pg::DataLoader dl(c.options(5, true));
  for (int step = 0; step < 10; ++step) {
    const Batch b = next(dl, 5);
    for (size_t r = 0; r < 5; ++r) {
      for (int t = 0; t + 1 < T; ++t) REQUIRE(b.targets[r * T + t] == b.inputs[r * T + t + 1]);
      REQUIRE(b.targets[r * T + T - 1] == b.inputs[r * T] + T);  // the window's (T+1)-th token
    }
  }
}

TEST_CASE("dataloader: random order is a fresh permutation per epoch, fixed by the seed", "[data]") {
  Corpus c("polargpt_test_dl_rand");
  const uint64_t seed = GENERATE(1, 2, 99);
  INFO("seed " << seed);
  pg::DataLoader a(c.options(1, true, seed)), b(c.options(1, true, seed)), other(c.options(1, true, seed + 1));
  std::vector<std::vector<int>> epochs(2);
  bool differs_from_other = false;
  for (auto& order : epochs)
    for (int i = 0; i < 124; ++i) {
      const Batch x = next(a, 1);
      REQUIRE(x == next(b, 1));
      differs_from_other |= !(x == next(other, 1));
      order.push_back(windows_of(x)[0]);
    }
  REQUIRE(differs_from_other);
  for (const auto& order : epochs) REQUIRE(std::set<int>(order.begin(), order.end()).size() == 124);
  REQUIRE(epochs[0] != epochs[1]);
  std::vector<int> identity(124);
  std::iota(identity.begin(), identity.end(), 0);
  REQUIRE(epochs[0] != identity);
}

TEST_CASE("dataloader: restoring state() reproduces the following batches", "[data]") {
  Corpus c("polargpt_test_dl_state");
  const bool random = GENERATE(false, true);
  INFO("random " << random);
  pg::DataLoader dl(c.options(6, random));
  for (int step = 0; step < 19; ++step) next(dl, 6);  // 114 windows: the next steps cross an epoch
  const nlohmann::json saved = dl.state();
  std::vector<Batch> expected;
  for (int step = 0; step < 5; ++step) expected.push_back(next(dl, 6));

  pg::DataLoader resumed(c.options(6, random));
  resumed.set_state(nlohmann::json::parse(saved.dump()));
  for (const Batch& b : expected) REQUIRE(next(resumed, 6) == b);

  // reset() goes back to the very first batch.
  pg::DataLoader fresh(c.options(6, random));
  const Batch first = next(fresh, 6);
  resumed.reset();
  REQUIRE(next(resumed, 6) == first);
}

TEST_CASE("dataloader: set_state rejects a position from other data or settings", "[data]") {
  Corpus c("polargpt_test_dl_badstate");
  pg::DataLoader dl(c.options(2, true));
  const nlohmann::json good = dl.state();
  auto with = [&](const char* key, const nlohmann::json& value) {
    nlohmann::json s = good;
    s[key] = value;
    return s;
  };
  REQUIRE_THROWS_WITH(dl.set_state(with("n_windows", 999)), Catch::Contains("n_windows"));
  REQUIRE_THROWS_WITH(dl.set_state(with("seq_len", 16)), Catch::Contains("seq_len"));
  REQUIRE_THROWS_WITH(dl.set_state(with("seed", 8)), Catch::Contains("seed"));
  REQUIRE_THROWS_WITH(dl.set_state(with("random", false)), Catch::Contains("random"));
  REQUIRE_THROWS_WITH(dl.set_state(with("index", 124)), Catch::Contains("outside"));
  REQUIRE_THROWS_WITH(dl.set_state(with("epoch", "x")), Catch::Contains("data state"));
  REQUIRE_THROWS_AS(dl.set_state(nlohmann::json::object()), pg::UserError);
}

TEST_CASE("dataloader: W ranks with batch B see exactly one rank's batch W*B, disjointly", "[data]") {
  Corpus c("polargpt_test_dl_ranks");
  const bool random = GENERATE(false, true);
  const int W = 3, B = 4;
  INFO("random " << random);
  pg::DataLoader single(c.options(W * B, random));
  std::vector<pg::DataLoader> ranks;
  for (int r = 0; r < W; ++r) ranks.emplace_back(c.options(B, random, 7, r, W));
  for (int step = 0; step < 25; ++step) {  // 300 windows: through two epoch boundaries
    const Batch all = next(single, W * B);
    std::set<int> union_of_ranks;
    for (int r = 0; r < W; ++r) {
      const Batch part = next(ranks[r], B);
      const auto lo = all.inputs.begin() + r * B * T;
      REQUIRE(std::vector<int32_t>(lo, lo + B * T) == part.inputs);
      const auto tlo = all.targets.begin() + r * B * T;
      REQUIRE(std::vector<int32_t>(tlo, tlo + B * T) == part.targets);
      for (const int w : windows_of(part)) union_of_ranks.insert(w);
      REQUIRE(ranks[r].state() == single.state());
    }
    const std::vector<int> all_windows = windows_of(all);
    REQUIRE(union_of_ranks == std::set<int>(all_windows.begin(), all_windows.end()));
    const int first = step * W * B, last = first + W * B - 1;  // stream positions of this step
    if (first / 124 == last / 124) REQUIRE(union_of_ranks.size() == size_t(W * B));  // within one epoch
  }
}

TEST_CASE("dataloader: bad options are user errors", "[data]") {
  Corpus c("polargpt_test_dl_opts");
  auto opt = c.options(2, false);
  opt.seq_len = 1000;  // 1000 tokens hold no window of 1001
  REQUIRE_THROWS_WITH(pg::DataLoader(opt), Catch::Contains("fewer than one window"));
  opt = c.options(2, false, 7, 3, 3);
  REQUIRE_THROWS_AS(pg::DataLoader(opt), pg::UserError);
  opt = c.options(2, false);
  opt.shards.push_back((c.dir / "missing.bin").string());
  REQUIRE_THROWS_WITH(pg::DataLoader(opt), Catch::Contains("missing.bin"));
}
