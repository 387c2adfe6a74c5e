// `polargpt sweep` as a user meets it: a bad sweep file is one line naming the key (exit 2) and
// nothing runs; --dry-run lists the runs; a sweep with a failing run finishes with exit code 3.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "common/synthetic_data.hpp"
#include "common/temp_dir.hpp"

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
