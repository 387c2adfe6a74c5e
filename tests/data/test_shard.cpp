#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/temp_dir.hpp"
#include "core/error.hpp"
#include "data/shard.hpp"

namespace fs = std::filesystem;

namespace {

using pg::test::TempDir;

// Overwrites the int32 at header slot `slot`.
void poke_header(const std::string& path, int slot, int32_t value) {
  std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
  f.seekp(slot * 4);
  f.write(reinterpret_cast<const char*>(&value), 4);
}

}  // namespace

TEST_CASE("shard: write then read returns the same tokens, in llm.c's layout", "[data]") {
  TempDir dir("polargpt_test_shard_rt");
  std::vector<uint16_t> tokens;
  for (int i = 0; i < 1000; ++i) tokens.push_back(uint16_t((i * 7919) % 65536));
  const std::string path = dir / "x.bin";
  pg::write_shard(path, tokens);
  REQUIRE(fs::file_size(path) == 1024 + 2 * tokens.size());
  REQUIRE(pg::read_shard(path) == tokens);

  std::ifstream f(path, std::ios::binary);
  int32_t header[3];
  f.read(reinterpret_cast<char*>(header), sizeof header);
  REQUIRE(header[0] == 20240520);
  REQUIRE(header[1] == 1);
  REQUIRE(header[2] == 1000);

  const pg::MappedShard mapped(path);
  REQUIRE(std::vector<uint16_t>(mapped.tokens().begin(), mapped.tokens().end()) == tokens);

  pg::write_shard(dir / "empty.bin", {});
  REQUIRE(pg::read_shard(dir / "empty.bin").empty());
}

TEST_CASE("shard: each corruption is one error naming the file", "[data]") {
  TempDir dir("polargpt_test_shard_bad");
  const std::vector<uint16_t> tokens(1000, 42);
  const std::string path = dir / "x.bin";
  const auto both = [&](const std::string& what) {
    REQUIRE_THROWS_WITH(pg::read_shard(path), Catch::StartsWith(path + ": ") && Catch::Contains(what));
    REQUIRE_THROWS_WITH(pg::MappedShard(path), Catch::StartsWith(path + ": ") && Catch::Contains(what));
  };

  SECTION("missing file") { both("cannot open"); }
  SECTION("bad magic") {
    pg::write_shard(path, tokens);
    poke_header(path, 0, 12345);
    both("bad magic 12345");
  }
  SECTION("bad version") {
    pg::write_shard(path, tokens);
    poke_header(path, 1, 2);
    both("unsupported version 2");
  }
  SECTION("truncated tokens") {
    pg::write_shard(path, tokens);
    fs::resize_file(path, 1800);
    both("truncated: header says 1000 tokens (3024 bytes) but file has 1800 bytes");
  }
  SECTION("truncated header") {
    pg::write_shard(path, tokens);
    fs::resize_file(path, 100);
    both("truncated: file has 100 bytes");
  }
  SECTION("trailing bytes") {
    pg::write_shard(path, tokens);
    fs::resize_file(path, 3030);
    both("trailing bytes");
  }
}

TEST_CASE("shard: expand_shards sorts matches and names the key when none match", "[data]") {
  TempDir dir("polargpt_test_shard_glob");
  for (const char* name : {"d_train_000002.bin", "d_train_000000.bin", "d_train_000001.bin", "d_val_000000.bin"})
    pg::write_shard(dir / name, {});
  const auto files = pg::expand_shards(dir / "d_train_*.bin", "data.train");
  REQUIRE(files == std::vector<std::string>{dir / "d_train_000000.bin", dir / "d_train_000001.bin",
                                            dir / "d_train_000002.bin"});
  const std::string pattern = dir / "nothing_*.bin";
  REQUIRE_THROWS_AS(pg::expand_shards(pattern, "data.train"), pg::UserError);
  REQUIRE_THROWS_WITH(pg::expand_shards(pattern, "data.val"), "data.val: no files match '" + pattern + "'");
}
