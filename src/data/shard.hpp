// Token shards in llm.c's format, so shards made for llm.c work here unchanged and back:
//
//   int32 header[256]: header[0] = 20240520 (magic), header[1] = 1 (version: uint16 tokens),
//                      header[2] = number of tokens; the rest zero
//   uint16 tokens[header[2]]
//
// little-endian, nothing after the tokens. Every reader checks magic, version and that the file
// size is exactly 1024 + 2 * count bytes; errors are one line naming the file.
// Test: tests/data/test_shard.cpp.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace pg {

constexpr int32_t kShardMagic = 20240520;
constexpr int32_t kShardVersion = 1;
constexpr int64_t kShardHeaderBytes = 256 * sizeof(int32_t);

void write_shard(const std::string& path, std::span<const uint16_t> tokens);
std::vector<uint16_t> read_shard(const std::string& path);

// The files matching a glob pattern, sorted. `key` names the setting the pattern came from
// (e.g. "data.train") in the UserError raised when nothing matches.
std::vector<std::string> expand_shards(const std::string& pattern, const std::string& key);

// A shard's tokens memory-mapped read-only (validated like read_shard), so a loader can read
// windows anywhere in a large corpus without holding it in memory.
class MappedShard {
 public:
  explicit MappedShard(const std::string& path);
  MappedShard(MappedShard&& other) noexcept;
  MappedShard& operator=(MappedShard&& other) noexcept;
  MappedShard(const MappedShard&) = delete;
  MappedShard& operator=(const MappedShard&) = delete;
  ~MappedShard();

  std::span<const uint16_t> tokens() const { return {tokens_, size_t(n_tokens_)}; }
  const std::string& path() const { return path_; }

 private:
  void release();

  std::string path_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const uint16_t* tokens_ = nullptr;
  int64_t n_tokens_ = 0;
};

}  // namespace pg
