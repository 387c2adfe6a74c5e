// A small learnable token corpus for trainer tests: a noisy Markov chain over `vocab` ids
// (each token is usually followed by (3 t + 1) mod vocab), written as llm.c shards.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/rng.hpp"
#include "data/shard.hpp"

namespace pg::test {

inline void write_markov_shards(const std::string& dir, int vocab, int64_t n_train, int64_t n_val, uint64_t seed) {
  Rng rng(seed);
  auto make = [&](int64_t n) {
    std::vector<uint16_t> t(static_cast<size_t>(n));
    uint16_t cur = 0;
    for (auto& x : t) {
      cur = rng.uniform() < 0.85 ? uint16_t((3 * cur + 1) % vocab) : uint16_t(rng.below(uint64_t(vocab)));
      x = cur;
    }
    return t;
  };
  write_shard(dir + "/syn_train_000000.bin", make(n_train));
  write_shard(dir + "/syn_val_000000.bin", make(n_val));
}

}  // namespace pg::test
