// Batches of (inputs, targets) windows from token shards, identical for any split over ranks.
//
// The shards are read as one concatenated stream of N tokens. Window w covers tokens
// [w*T, w*T + T] (T = seq_len, so T+1 tokens: inputs are the first T, targets the last T), for
// w in [0, n_windows) with n_windows = (N - 1) / T; windows may span shard boundaries.
//
// The GLOBAL stream of windows is a function of the seed alone: epoch e visits all windows once,
// in order (sequential) or in a permutation drawn from (seed, e) (random), and epoch e+1 follows
// without a seam. Each step consumes world_size * batch_size windows of that stream; rank r takes
// the slice [r*B, (r+1)*B). So W ranks with batch B together see exactly the windows one rank
// with batch W*B sees, and the position (epoch, index) is the same on every rank: it is all a
// checkpoint needs, and a run may resume on a different number of ranks.
// Test: tests/data/test_dataloader.cpp.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/shard.hpp"

namespace pg {

struct DataLoaderOptions {
  std::vector<std::string> shards;  // in stream order (expand_shards gives them sorted)
  int batch_size = 0;               // B, windows per rank per step
  int seq_len = 0;                  // T
  bool random = false;              // false: windows in order every epoch
  uint64_t seed = 0;
  int rank = 0;
  int world_size = 1;
};

class DataLoader {
 public:
  explicit DataLoader(const DataLoaderOptions& options);

  // inputs and targets hold batch_size * seq_len tokens each, row b = window b of this rank's
  // slice; targets[b, t] = inputs[b, t + 1] within a window.
  void next_batch(std::span<int32_t> inputs, std::span<int32_t> targets);

  // {"epoch", "index"} plus what they are only meaningful with (n_windows, seq_len, random,
  // seed); set_state raises UserError when those differ from this loader's.
  nlohmann::json state() const;
  void set_state(const nlohmann::json& state);
  void reset();  // back to epoch 0, window 0 (used before each evaluation)

  int64_t n_tokens() const { return n_tokens_; }
  int64_t n_windows() const { return n_windows_; }

 private:
  int64_t current_window();          // window at (epoch_, index_) of the global stream
  void advance(int64_t n_windows);   // move the position n windows on, across epochs
  void read_tokens(int64_t start, std::span<int32_t> out) const;  // from the concatenation

  DataLoaderOptions opt_;
  std::vector<MappedShard> shards_;
  std::vector<int64_t> shard_start_;  // first token of each shard in the concatenation
  int64_t n_tokens_ = 0;
  int64_t n_windows_ = 0;

  int64_t epoch_ = 0;
  int64_t index_ = 0;                // next window of the epoch's order
  std::vector<int64_t> order_;       // random: the epoch's permutation (8 bytes a window: 80 MB
                                     // for 10B tokens at T = 1024)
  int64_t order_epoch_ = -1;         // epoch that order_ belongs to
  std::vector<int32_t> window_;      // scratch: one window of T+1 tokens
};

}  // namespace pg
