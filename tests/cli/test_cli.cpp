// The command line as a user meets it: bad configs, data, checkpoints and flags each give one
// line naming what is wrong and exit with code 2; a run killed with SIGKILL resumes to the same
// losses as an uninterrupted run.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/synthetic_data.hpp"
#include "common/temp_dir.hpp"
#include "io/jsonl.hpp"
#include "train/engine.hpp"

namespace fs = std::filesystem;
using namespace pg;

namespace {

struct Result {
  int code;
  std::string output;
};

// Captures stderr (where errors go; progress logs go to stdout), or both with `with_stdout`.
Result run(const std::string& args, bool with_stdout = false) {
  const std::string cmd = std::string(POLARGPT_BINARY) + " " + args + (with_stdout ? " 2>&1" : " 2>&1 >/dev/null");
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

int lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

void write(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}

std::string small_sets(const test::TempDir& d) {
  return "--set model.n_layer=1 --set model.d_model=32 --set model.n_head=2 --set model.vocab_size=32 "
         "--set model.seq_len=16 --set train.batch_size=4 --set train.threads=1 --set train.log_every=1 "
         "--set data.train=" + d / "syn_train_*.bin" + " --set data.val=" + d / "syn_val_*.bin";
}

}  // namespace

TEST_CASE("cli: a bad config is refused with one line naming the key", "[cli]") {
  test::TempDir d("cli");
  write(d / "bad.json", R"({"model": {"n_layers": 4}})");
  auto r = run("train --config " + d / "bad.json");
  REQUIRE(r.code == 2);
  REQUIRE(lines(r.output) == 1);
  REQUIRE_THAT(r.output, Catch::Contains("model.n_layers"));

  write(d / "range.json", R"({"optim": {"lr": -1}})");
  r = run("train --config " + d / "range.json");
  REQUIRE(r.code == 2);
  REQUIRE(lines(r.output) == 1);
  REQUIRE_THAT(r.output, Catch::Contains("optim.lr"));

  r = run("train --config " + d / "missing.json");
  REQUIRE(r.code == 2);
  REQUIRE_THAT(r.output, Catch::Contains("missing.json"));

  // A comma is part of a --set value (lists such as spectral.roles), not a separator.
  r = run("config --set spectral.roles=attn,mlp --set spectral.monitor_filter=h.0.*,lm_head.weight", true);
  REQUIRE(r.code == 0);
  REQUIRE_THAT(r.output, Catch::Contains("\"attn,mlp\"") && Catch::Contains("\"h.0.*,lm_head.weight\""));

  r = run("config --set model.n_layer=abc");
  REQUIRE(r.code == 2);
  REQUIRE(lines(r.output) == 1);
  REQUIRE_THAT(r.output, Catch::Contains("model.n_layer"));
}

TEST_CASE("cli: unknown flags and commands exit 2 with one line", "[cli]") {
  auto r = run("train --bogus 1");
  REQUIRE(r.code == 2);
  REQUIRE(lines(r.output) == 1);
  REQUIRE_THAT(r.output, Catch::Contains("bogus"));
  r = run("frobnicate");
  REQUIRE(r.code == 2);
  REQUIRE_THAT(r.output, Catch::Contains("frobnicate"));
  r = run("eval");
  REQUIRE(r.code == 2);
  REQUIRE_THAT(r.output, Catch::Contains("--ckpt"));
}

TEST_CASE("cli: a missing or truncated shard is named in a one-line error", "[cli]") {
  test::TempDir d("cli");
  write(d / "c.json", "{}");
  auto r = run("train --config " + d / "c.json" + " --set data.train=" + d / "nothing_*.bin" + " --out " + d / "run");
  REQUIRE(r.code == 2);
  REQUIRE(lines(r.output) == 1);
  REQUIRE_THAT(r.output, Catch::Contains("data.train"));

  test::write_markov_shards(d.str(), 32, 5000, 2000, 1);
  fs::resize_file(d / "syn_train_000000.bin", fs::file_size(d / "syn_train_000000.bin") - 100);
  r = run("train --config " + d / "c.json " + small_sets(d) + " --out " + d / "run2");
  REQUIRE(r.code == 2);
  REQUIRE(lines(r.output) == 1);
  REQUIRE_THAT(r.output, Catch::Contains("syn_train_000000.bin"));
}

TEST_CASE("cli: a corrupt checkpoint is refused with one line", "[cli]") {
  test::TempDir d("cli");
  test::write_markov_shards(d.str(), 32, 5000, 2000, 2);
  write(d / "c.json", "{}");
  auto r = run("train --config " + d / "c.json " + small_sets(d) + " --set train.max_steps=2 --out " + d / "run");
  REQUIRE(r.code == 0);
  r = run("eval --ckpt " + d / "run", true);
  REQUIRE(r.code == 0);
  REQUIRE_THAT(r.output, Catch::Contains("val_loss"));
  const std::string model = d / "run/checkpoints/00000002/model.safetensors";
  fs::resize_file(model, fs::file_size(model) / 2);
  r = run("eval --ckpt " + d / "run/checkpoints/00000002");
  REQUIRE(r.code == 2);
  REQUIRE(lines(r.output) == 1);
  REQUIRE_THAT(r.output, Catch::Contains("model.safetensors"));
  write(d / "run/checkpoints/00000002/state.json", "{not json");
  r = run("sample --ckpt " + d / "run/checkpoints/00000002");
  REQUIRE(r.code == 2);
  REQUIRE(lines(r.output) == 1);
  REQUIRE_THAT(r.output, Catch::Contains("state.json"));
}

TEST_CASE("cli: a run killed with SIGKILL resumes to the uninterrupted run's losses", "[cli]") {
  const std::string kind = GENERATE(as<std::string>{}, "adamw", "muon");
  CAPTURE(kind);
  test::TempDir d("cli");
  test::write_markov_shards(d.str(), 32, 50000, 2000, 3);
  write(d / "c.json", "{}");
  const std::string common = "train --config " + d / "c.json " + small_sets(d) +
                             " --set train.max_steps=200 --set train.checkpoint_every=20 --set train.eval_every=0 "
                             "--set model.seq_len=64 --set train.batch_size=8 --set optim.kind=" + kind;
  REQUIRE(run(common + " --out " + d / "full").code == 0);

  const std::string cmd = std::string(POLARGPT_BINARY) + " " + common + " --out " + d / "killed";
  const pid_t pid = fork();
  if (pid == 0) {
    freopen("/dev/null", "w", stdout);
    freopen("/dev/null", "w", stderr);
    execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), (char*)nullptr);
    _exit(127);
  }
  // Kill it once it has written its second checkpoint, mid-way through later steps.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  bool killed = false;
  while (std::chrono::steady_clock::now() < deadline) {
    if (fs::exists(d / "killed/checkpoints/00000040")) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      kill(pid, SIGKILL);
      killed = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  int status = 0;
  waitpid(pid, &status, 0);
  REQUIRE(killed);
  REQUIRE(WIFSIGNALED(status));
  REQUIRE(run("train --resume " + d / "killed").code == 0);
  const auto a = io::read_jsonl(d / "full/metrics.jsonl"), b = io::read_jsonl(d / "killed/metrics.jsonl");
  REQUIRE(a.size() == 200);
  REQUIRE(b.size() == 200);
  for (size_t i = 0; i < a.size(); ++i) {
    REQUIRE(b[i].at("step") == a[i].at("step"));
    REQUIRE(b[i].at("train_loss").get<double>() == a[i].at("train_loss").get<double>());
  }
}

TEST_CASE("cli: export to llm.c, import back, eval gives the same loss; export errors are one line", "[cli]") {
  test::TempDir d("cli");
  test::write_markov_shards(d.str(), 32, 5000, 2000, 4);
  write(d / "c.json", "{}");
  REQUIRE(run("train --config " + d / "c.json " + small_sets(d) + " --set train.max_steps=2 --out " + d / "run").code == 0);
  REQUIRE(run("export --ckpt " + d / "run --format llmc --out " + d / "m.bin").code == 0);
  const std::string data = " --set data.val=" + d / "syn_val_*.bin" + " --set train.batch_size=4 --set train.threads=1";
  REQUIRE(run("import --llmc " + d / "m.bin --out " + d / "imp" + data).code == 0);
  const auto a = run("eval --ckpt " + d / "run", true), b = run("eval --ckpt " + d / "imp", true);
  REQUIRE(a.code == 0);
  REQUIRE(b.code == 0);
  auto loss = [](const std::string& out) { return nlohmann::json::parse(out.substr(out.find('{'))).at("val_loss"); };
  REQUIRE(loss(a.output) == loss(b.output));
  REQUIRE(run("export --ckpt " + d / "imp --format hf --out " + d / "hf").code == 0);
  REQUIRE(fs::exists(d / "hf/config.json"));
  REQUIRE(fs::exists(d / "hf/model.safetensors"));

  auto one_line = [&](const std::string& args, const std::string& needle) {
    INFO(args);
    const auto r = run(args);
    REQUIRE(r.code == 2);
    REQUIRE(lines(r.output) == 1);
    REQUIRE_THAT(r.output, Catch::Contains(needle));
  };
  write(d / "bad.bin", std::string(2048, '\x01'));
  one_line("import --llmc " + d / "bad.bin --out " + d / "x", "bad.bin: bad magic");
  one_line("import --llmc " + d / "m.bin --out " + d / "y --set model.n_layer=2", "model.n_layer");
  one_line("export --ckpt " + d / "run --format onnx --out " + d / "z", "--format");
  REQUIRE(run("train --config " + d / "c.json " + small_sets(d) +
              " --set model.norm=rmsnorm --set train.max_steps=1 --out " + d / "rms").code == 0);
  one_line("export --ckpt " + d / "rms --format hf --out " + d / "rms_hf", "model.norm: 'rmsnorm'");
}

TEST_CASE("cli: --device cuda where it cannot run is one line naming train.device", "[cli]") {
  if (cuda_trainer_available(nullptr)) {
    SUCCEED("a GPU is present: the GPU tests cover --device cuda");
    return;
  }
  test::TempDir d("clicuda");
  test::write_markov_shards(d.str(), 32, 4000, 2000, 9);
  const Result r = run("train --config configs/tiny.json " + small_sets(d) + " --out " + d / "run --device cuda");
  CAPTURE(r.output);
  REQUIRE(r.code == 2);
  REQUIRE(lines(r.output) == 1);
  REQUIRE_THAT(r.output, Catch::Contains("train.device = cuda"));
  const Result v = run("--version", true);
  REQUIRE_THAT(v.output, Catch::Contains("train: cpu"));
}
