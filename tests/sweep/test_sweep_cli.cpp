// `polargpt sweep` as a user meets it: a bad sweep file is one line naming the key (exit 2) and
// nothing runs; --dry-run lists the runs; a sweep with a failing run finishes with exit code 3;
// SIGTERM stops a sweep with a checkpoint and starting it again finishes it.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "io/jsonl.hpp"

#include "common/synthetic_data.hpp"
#include "common/temp_dir.hpp"

extern char** environ;

using namespace pg;
namespace fs = std::filesystem;

namespace {

std::pair<int, std::string> polargpt(const std::string& args) {
  std::string cmd = POLARGPT_BINARY;
  cmd += " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

}  // namespace

TEST_CASE("sweep cli: unknown keys stop the sweep before anything runs; --dry-run lists runs", "[sweep]") {
  test::TempDir d("swcli");
  std::ofstream(d / "bad.json") << R"({"grid": {"optim.lr": [0.1]}, "list": [{"model.n_layerz": 2}]})";
  auto [code, out] = polargpt("sweep " + d / "bad.json" + " --out " + d / "s");
  REQUIRE(code == 2);
  REQUIRE(std::count(out.begin(), out.end(), '\n') == 1);
  REQUIRE_THAT(out, Catch::Contains("model.n_layerz"));
  REQUIRE_FALSE(fs::exists(d / "s"));

  std::ofstream(d / "ok.json") << R"({"grid": {"optim.lr": [0.1, 0.2]}, "list": [{"model.n_layer": 1}, {"model.n_layer": 2}]})";
  std::tie(code, out) = polargpt("sweep " + d / "ok.json" + " --out " + d / "s --dry-run");
  REQUIRE(code == 0);
  REQUIRE_THAT(out, Catch::Contains("4 runs"));
  REQUIRE_THAT(out, Catch::Contains("run            optim.lr=0.2,model.n_layer=1"));
  REQUIRE_FALSE(fs::exists(d / "s"));

  std::tie(code, out) = polargpt("sweep " + d / "ok.json" + " --gpus 0,,1 --dry-run");
  REQUIRE(code == 2);
  REQUIRE_THAT(out, Catch::Contains("--gpus"));
}

TEST_CASE("sweep cli: a sweep with a failed run finishes every run and exits with 3", "[sweep]") {
  test::TempDir d("swcli");
  test::write_markov_shards(d.str(), 32, 4000, 1000, 8);
  std::ofstream(d / "s.json") << R"({"set": {"model.n_layer": 1, "model.n_head": 2, "model.d_model": 16,
      "model.vocab_size": 32, "model.seq_len": 8, "train.batch_size": 2, "train.max_steps": 2,
      "train.eval_batches": 1, "train.threads": 1, "data.val": ")" + d / "syn_val_*.bin" + R"("},
      "list": [{"data.train": "missing/*.bin"}, {"data.train": ")" + d / "syn_train_*.bin" + R"("}]})";
  auto [code, out] = polargpt("sweep " + d / "s.json" + " --out " + d / "out");
  CAPTURE(out);
  REQUIRE(code == 3);
  REQUIRE_THAT(out, Catch::Contains("1 done, 1 failed"));
  REQUIRE(fs::exists(d / "out/summary.md"));
  REQUIRE(fs::exists(d / "out/sweep.json"));
}

TEST_CASE("sweep cli: SIGTERM stops the sweep with a checkpoint; the same command then finishes it", "[sweep]") {
  test::TempDir d("swcli");
  test::write_markov_shards(d.str(), 32, 4000, 1000, 9);
  // Steps of well under a millisecond: 5000 of them leave the signal a window of about a second.
  std::ofstream(d / "s.json") << R"({"set": {"model.n_layer": 1, "model.n_head": 2, "model.d_model": 16,
      "model.vocab_size": 32, "model.seq_len": 8, "train.batch_size": 2, "train.max_steps": 5000,
      "train.eval_every": 0, "train.eval_batches": 1, "train.log_every": 1, "train.checkpoint_every": 0,
      "train.threads": 1, "data.train": ")" + d / "syn_train_*.bin" + R"(", "data.val": ")" + d / "syn_val_*.bin" + R"("},
      "grid": {"train.seed": [1, 2]}})";
  const std::string exe = POLARGPT_BINARY, sweep = d / "s.json", out = d / "out", log = d / "sweep.log";
  std::vector<std::string> args = {exe, "sweep", sweep, "--out", out};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = -1;
  REQUIRE(posix_spawn(&pid, exe.c_str(), &fa, nullptr, argv.data(), environ) == 0);
  posix_spawn_file_actions_destroy(&fa);

  const std::string first = out + "/train.seed=1";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    if (fs::exists(first + "/metrics.jsonl") && io::read_jsonl(first + "/metrics.jsonl").size() >= 5) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  REQUIRE(kill(pid, SIGTERM) == 0);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  std::ifstream st(first + "/status.json");
  const auto j = nlohmann::json::parse(st);
  INFO(j.dump());
  REQUIRE(j.at("status") == "interrupted");
  const int stopped_at = io::read_jsonl(first + "/metrics.jsonl").back().at("step").get<int>();
  REQUIRE(stopped_at < 5000);
  REQUIRE(fs::exists(first + "/checkpoints/latest"));
  REQUIRE_FALSE(fs::exists(out + "/train.seed=2/status.json"));  // the sweep stopped launching

  auto [code, text] = polargpt("sweep " + sweep + " --out " + out);
  CAPTURE(text);
  REQUIRE(code == 0);
  REQUIRE_THAT(text, Catch::Contains("2 done, 0 failed"));
  const auto recs = io::read_jsonl(first + "/metrics.jsonl");
  REQUIRE(recs.size() == 5000);
  REQUIRE(recs.back().at("step") == 5000);
  std::ifstream tl(first + "/train.log");
  const std::string train_log((std::istreambuf_iterator<char>(tl)), std::istreambuf_iterator<char>());
  REQUIRE_THAT(train_log, Catch::Contains("--resume " + first));
}
