#include <catch2/catch.hpp>

#include <filesystem>

#include "core/error.hpp"
#include "io/checkpoint_dir.hpp"
#include "common/temp_dir.hpp"

namespace fs = std::filesystem;
using pg::io::CheckpointTransaction;
using pg::test::slurp;
using pg::test::spit;
using pg::test::TempDir;

namespace {

void write_checkpoint_files(const std::string& dir, const std::string& tag) {
  spit(dir + "/model.safetensors", "model " + tag);
  spit(dir + "/optimizer.safetensors", "optimizer " + tag);
  spit(dir + "/state.json", "{\"tag\": \"" + tag + "\"}");
}

void commit_step(const std::string& run_dir, int64_t step, const std::string& tag = "") {
  CheckpointTransaction tx(run_dir, step);
  write_checkpoint_files(tx.dir(), tag.empty() ? std::to_string(step) : tag);
  tx.commit();
}

// Names in dir, sorted.
std::vector<std::string> listing(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("checkpoint_name: 8 zero-padded digits", "[io]") {
  REQUIRE(pg::io::checkpoint_name(0) == "00000000");
  REQUIRE(pg::io::checkpoint_name(100) == "00000100");
  REQUIRE(pg::io::checkpoint_name(123456789) == "123456789");
}

TEST_CASE("write_file_atomic: writes and replaces content, leaves no temporary file", "[io]") {
  TempDir tmp;
  const std::string path = tmp / "state.json";
  pg::io::write_file_atomic(path, "first");
  REQUIRE(slurp(path) == "first");
  pg::io::write_file_atomic(path, std::string(100000, 'x'));
  REQUIRE(slurp(path) == std::string(100000, 'x'));
  pg::io::write_file_atomic(path, "");
  REQUIRE(slurp(path).empty());
  REQUIRE(listing(tmp.str()) == std::vector<std::string>{"state.json"});

  pg::io::fsync_path(path);
  pg::io::fsync_path(tmp.str());
  REQUIRE_THROWS_AS(pg::io::fsync_path(tmp / "missing"), pg::UserError);
  REQUIRE_THROWS_WITH(pg::io::write_file_atomic(tmp / "no/such/dir/f", "x"),
                      Catch::Contains(tmp / "no/such/dir/f"));
}

TEST_CASE("checkpoint transaction: commit makes the directory and latest", "[io]") {
  TempDir tmp;
  const std::string run = tmp.str();
  CheckpointTransaction tx(run, 100);
  REQUIRE(fs::is_directory(tx.dir()));
  REQUIRE(tx.final_dir() == run + "/checkpoints/00000100");
  REQUIRE_FALSE(fs::exists(tx.final_dir()));
  write_checkpoint_files(tx.dir(), "a");
  const std::string tmp_dir = tx.dir();
  tx.commit();

  REQUIRE_FALSE(fs::exists(tmp_dir));
  REQUIRE(pg::io::is_complete_checkpoint(tx.final_dir()));
  REQUIRE(slurp(tx.final_dir() + "/model.safetensors") == "model a");
  REQUIRE(slurp(run + "/checkpoints/latest") == "00000100\n");
  REQUIRE(pg::io::find_latest_checkpoint(run) == tx.final_dir());
  REQUIRE(listing(run + "/checkpoints") == std::vector<std::string>{"00000100", "latest"});
}

TEST_CASE("checkpoint transaction: committing a step again replaces it", "[io]") {
  TempDir tmp;
  const std::string run = tmp.str();
  commit_step(run, 100, "old");
  commit_step(run, 100, "new");
  REQUIRE(slurp(run + "/checkpoints/00000100/model.safetensors") == "model new");
  REQUIRE(listing(run + "/checkpoints") == std::vector<std::string>{"00000100", "latest"});
}

TEST_CASE("checkpoint transaction: without commit nothing changes", "[io]") {
  TempDir tmp;
  const std::string run = tmp.str();
  commit_step(run, 100);
  {
    CheckpointTransaction tx(run, 200);
    write_checkpoint_files(tx.dir(), "lost");
  }
  REQUIRE(listing(run + "/checkpoints") == std::vector<std::string>{"00000100", "latest"});
  REQUIRE(slurp(run + "/checkpoints/latest") == "00000100\n");
  REQUIRE(pg::io::find_latest_checkpoint(run) == run + "/checkpoints/00000100");
}

TEST_CASE("find_latest_checkpoint: falls back to the highest complete directory", "[io]") {
  TempDir tmp;
  const std::string run = tmp.str();
  const std::string ck = run + "/checkpoints";

  SECTION("no checkpoints at all") {
    REQUIRE_FALSE(pg::io::find_latest_checkpoint(run).has_value());
    fs::create_directories(ck);
    REQUIRE_FALSE(pg::io::find_latest_checkpoint(run).has_value());
  }
  SECTION("latest is missing") {
    commit_step(run, 100);
    commit_step(run, 300);
    fs::create_directories(ck + "/00000400");  // incomplete: ignored
    spit(ck + "/00000400/model.safetensors", "partial");
    fs::remove(ck + "/latest");
    REQUIRE(pg::io::find_latest_checkpoint(run) == ck + "/00000300");
  }
  SECTION("latest names a vanished directory") {
    commit_step(run, 100);
    commit_step(run, 200);
    commit_step(run, 300);
    fs::remove_all(ck + "/00000300");
    REQUIRE(slurp(ck + "/latest") == "00000300\n");
    REQUIRE(pg::io::find_latest_checkpoint(run) == ck + "/00000200");
  }
  SECTION("latest wins over a higher-numbered directory") {
    commit_step(run, 300);
    commit_step(run, 100);
    REQUIRE(pg::io::find_latest_checkpoint(run) == ck + "/00000100");
  }
  SECTION("latest names a missing directory and there is no fallback") {
    fs::create_directories(ck);
    spit(ck + "/latest", "00000500\n");
    REQUIRE_THROWS_WITH(pg::io::find_latest_checkpoint(run),
                        Catch::Contains(ck + "/latest") && Catch::Contains("00000500"));
  }
  SECTION("latest names an incomplete directory and there is no fallback") {
    commit_step(run, 500);
    fs::remove(ck + "/00000500/optimizer.safetensors");
    REQUIRE_THROWS_AS(pg::io::find_latest_checkpoint(run), pg::UserError);
  }
}

TEST_CASE("prune_checkpoints: keeps the newest and latest, removes stale temporaries", "[io]") {
  TempDir tmp;
  const std::string run = tmp.str();
  const std::string ck = run + "/checkpoints";
  for (int64_t s = 100; s <= 500; s += 100) commit_step(run, s);
  fs::create_directories(ck + "/.tmp-00000600-99999");  // left by a crashed writer
  fs::create_directories(ck + "/00000050");             // incomplete: not ours to remove

  SECTION("keep the last two") {
    pg::io::prune_checkpoints(run, 2);
    REQUIRE(listing(ck) == std::vector<std::string>{"00000050", "00000400", "00000500", "latest"});
  }
  SECTION("latest is kept even when older") {
    pg::io::write_file_atomic(ck + "/latest", "00000200\n");
    pg::io::prune_checkpoints(run, 1);
    REQUIRE(listing(ck) == std::vector<std::string>{"00000050", "00000200", "00000500", "latest"});
    REQUIRE(pg::io::find_latest_checkpoint(run) == ck + "/00000200");
  }
  SECTION("keep_last <= 0 keeps every checkpoint") {
    pg::io::prune_checkpoints(run, 0);
    REQUIRE(listing(ck) == std::vector<std::string>{"00000050", "00000100", "00000200", "00000300",
                                                   "00000400", "00000500", "latest"});
  }
  SECTION("a transaction in progress is not stale") {
    CheckpointTransaction tx(run, 600);
    write_checkpoint_files(tx.dir(), "live");
    pg::io::prune_checkpoints(run, 5);
    REQUIRE(fs::is_directory(tx.dir()));
    REQUIRE_FALSE(fs::exists(ck + "/.tmp-00000600-99999"));
    tx.commit();
    pg::io::prune_checkpoints(run, 5);
    REQUIRE(listing(ck) == std::vector<std::string>{"00000050", "00000200", "00000300", "00000400",
                                                   "00000500", "00000600", "latest"});
  }
}
