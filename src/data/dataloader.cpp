#include "data/dataloader.hpp"

#include <algorithm>
#include <numeric>

#include "core/error.hpp"
#include "core/rng.hpp"

namespace pg {
namespace {

// splitmix64 finaliser: decorrelates the per-epoch seeds (seed, epoch) → one Rng seed.
uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

DataLoader::DataLoader(const DataLoaderOptions& options) : opt_(options) {
  if (opt_.shards.empty()) throw UserError("data: no token shards given");
  if (opt_.batch_size <= 0) throw UserError("data: batch_size must be positive, got " + std::to_string(opt_.batch_size));
  if (opt_.seq_len <= 0) throw UserError("data: seq_len must be positive, got " + std::to_string(opt_.seq_len));
  if (opt_.world_size <= 0 || opt_.rank < 0 || opt_.rank >= opt_.world_size)
    throw UserError("data: rank " + std::to_string(opt_.rank) + " is outside world_size " +
                    std::to_string(opt_.world_size));
  for (const std::string& path : opt_.shards) {
    shards_.emplace_back(path);
    shard_start_.push_back(n_tokens_);
    n_tokens_ += int64_t(shards_.back().tokens().size());
  }
  n_windows_ = n_tokens_ > 0 ? (n_tokens_ - 1) / opt_.seq_len : 0;
  if (n_windows_ == 0)
    throw UserError(opt_.shards.front() + (opt_.shards.size() > 1 ? " (and the other shards)" : "") + ": " +
                    std::to_string(n_tokens_) + " tokens, fewer than one window of seq_len + 1 = " +
                    std::to_string(opt_.seq_len + 1));
  window_.resize(size_t(opt_.seq_len) + 1);
}

void DataLoader::read_tokens(int64_t start, std::span<int32_t> out) const {
  // Last shard starting at or before `start`, then copy on across boundaries.
  size_t s = size_t(std::upper_bound(shard_start_.begin(), shard_start_.end(), start) - shard_start_.begin()) - 1;
  size_t done = 0;
  while (done < out.size()) {
    const std::span<const uint16_t> tokens = shards_[s].tokens();
    const int64_t offset = start + int64_t(done) - shard_start_[s];
    const size_t n = std::min(out.size() - done, tokens.size() - size_t(offset));
    std::copy_n(tokens.begin() + offset, n, out.begin() + done);
    done += n;
    ++s;
  }
}

int64_t DataLoader::current_window() {
  if (!opt_.random) return index_;
  if (order_epoch_ != epoch_) {  // Fisher-Yates, from (seed, epoch) alone
    Rng rng(mix(opt_.seed ^ mix(uint64_t(epoch_))));
    order_.resize(size_t(n_windows_));
    std::iota(order_.begin(), order_.end(), int64_t(0));
    for (int64_t i = n_windows_ - 1; i > 0; --i) std::swap(order_[i], order_[rng.below(uint64_t(i) + 1)]);
    order_epoch_ = epoch_;
  }
  return order_[index_];
}

void DataLoader::advance(int64_t n) {
  index_ += n;
  epoch_ += index_ / n_windows_;
  index_ %= n_windows_;
}

void DataLoader::next_batch(std::span<int32_t> inputs, std::span<int32_t> targets) {
  const size_t B = size_t(opt_.batch_size), T = size_t(opt_.seq_len);
  PG_CHECK(inputs.size() == B * T && targets.size() == B * T, "next_batch: spans must hold batch_size * seq_len");
  advance(int64_t(opt_.rank) * opt_.batch_size);  // the slices of lower ranks
  for (size_t b = 0; b < B; ++b) {
    read_tokens(current_window() * int64_t(T), window_);
    std::copy_n(window_.begin(), T, inputs.begin() + b * T);
    std::copy_n(window_.begin() + 1, T, targets.begin() + b * T);
    advance(1);
  }
  advance(int64_t(opt_.world_size - 1 - opt_.rank) * opt_.batch_size);  // the higher ranks'
}

nlohmann::json DataLoader::state() const {
  return {{"epoch", epoch_},         {"index", index_},       {"n_windows", n_windows_},
          {"seq_len", opt_.seq_len}, {"random", opt_.random}, {"seed", opt_.seed}};
}

void DataLoader::set_state(const nlohmann::json& state) {
  const auto field = [&](const char* key) -> const nlohmann::json& {
    if (!state.is_object() || !state.contains(key)) throw UserError(std::string("data state: missing '") + key + "'");
    return state.at(key);
  };
  try {
    const auto mismatch = [](const char* key, const std::string& saved, const std::string& now) {
      return UserError(std::string("data state: saved with ") + key + " = " + saved + " but the loader has " +
                       key + " = " + now + " (different data or settings)");
    };
    if (field("n_windows").get<int64_t>() != n_windows_)
      throw mismatch("n_windows", field("n_windows").dump(), std::to_string(n_windows_));
    if (field("seq_len").get<int>() != opt_.seq_len)
      throw mismatch("seq_len", field("seq_len").dump(), std::to_string(opt_.seq_len));
    if (field("random").get<bool>() != opt_.random)
      throw mismatch("random", field("random").dump(), opt_.random ? "true" : "false");
    if (opt_.random && field("seed").get<uint64_t>() != opt_.seed)
      throw mismatch("seed", field("seed").dump(), std::to_string(opt_.seed));
    const int64_t epoch = field("epoch").get<int64_t>(), index = field("index").get<int64_t>();
    if (epoch < 0 || index < 0 || index >= n_windows_)
      throw UserError("data state: position epoch " + std::to_string(epoch) + ", index " + std::to_string(index) +
                      " is outside [0, " + std::to_string(n_windows_) + ") windows");
    epoch_ = epoch;
    index_ = index;
  } catch (const nlohmann::json::exception& e) {
    throw UserError(std::string("data state: wrong type (") + e.what() + ")");
  }
}

void DataLoader::reset() {
  epoch_ = 0;
  index_ = 0;
}

}  // namespace pg
