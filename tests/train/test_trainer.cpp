// The training loop end to end on a synthetic corpus: loss falls, checkpoints resume exactly,
// non-finite steps are skipped and bounded, a signal stops the run with a checkpoint.
#include <catch2/catch.hpp>

#include <cmath>
#include <csignal>
#include <filesystem>

#include "common/run_metrics.hpp"
#include "common/synthetic_data.hpp"
#include "common/temp_dir.hpp"
#include "config/config.hpp"
#include "core/error.hpp"
#include "io/checkpoint_dir.hpp"
#include "io/jsonl.hpp"
#include "train/trainer.hpp"

using namespace pg;
namespace fs = std::filesystem;

namespace {

Config small_run(const test::TempDir& data, std::vector<std::string> extra = {}) {
  std::vector<std::string> sets = {"model.n_layer=2",        "model.n_head=2",          "model.d_model=16",
                                   "model.vocab_size=32",    "model.seq_len=16",        "train.batch_size=4",
                                   "train.max_steps=12",     "train.eval_every=6",      "train.eval_batches=2",
                                   "train.log_every=1",      "train.checkpoint_every=4", "optim.warmup_steps=2",
                                   "optim.lr=0.01",          "train.threads=1",
                                   "data.train=" + data / "syn_train_*.bin", "data.val=" + data / "syn_val_*.bin"};
  sets.insert(sets.end(), extra.begin(), extra.end());
  return default_config(sets);
}


}  // namespace

TEST_CASE("trainer: loss falls on a learnable corpus and metrics have the documented keys", "[train]") {
  test::TempDir data("trdata"), run("trrun");
  test::write_markov_shards(data.str(), 32, 20000, 4000, 1);
  const Config cfg = small_run(data, {"train.max_steps=40", "train.eval_every=20"});
  const RunSummary s = train(cfg, {run / "r", false, {}});
  REQUIRE(s.steps_done == 40);
  const auto recs = io::read_jsonl(run / "r/metrics.jsonl");
  REQUIRE(recs.size() == 40);
  for (const char* key : {"step", "train_loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s"})
    REQUIRE(recs.back().contains(key));
  REQUIRE(recs.back().contains("val_loss"));
  REQUIRE(recs.back().contains("val_acc"));
  REQUIRE(recs.front().at("train_loss").get<double>() > std::log(32.0) - 0.3);
  REQUIRE(recs.back().at("val_loss").get<double>() < recs.front().at("train_loss").get<double>() - 1.0);
  REQUIRE(fs::exists(run / "r/config.json"));
  REQUIRE(io::find_latest_checkpoint(run / "r").has_value());
}

TEST_CASE("trainer: resuming from a checkpoint reproduces the uninterrupted losses exactly", "[train]") {
  const std::string kind = GENERATE(as<std::string>{}, "adamw", "muon");
  CAPTURE(kind);
  test::TempDir data("trdata"), run("trrun");
  test::write_markov_shards(data.str(), 32, 20000, 4000, 2);
  const Config cfg = small_run(data, {"optim.kind=" + kind});
  train(cfg, {run / "full", false, {}});
  const auto full = test::run_losses(run / "full");
  REQUIRE(full.size() == 12);

  // A run that died after its step-8 checkpoint: its directory holds that checkpoint and
  // metrics up to some later step (written before the crash).
  fs::create_directories(run / "cut/checkpoints");
  fs::copy(run / "full/checkpoints/00000008", run / "cut/checkpoints/00000008", fs::copy_options::recursive);
  fs::copy_file(run / "full/metrics.jsonl", run / "cut/metrics.jsonl");
  const RunSummary s = train(cfg, {run / "cut", true, {}});
  REQUIRE(s.steps_done == 12);
  const auto resumed = test::run_losses(run / "cut");
  REQUIRE(resumed.size() == 12);  // steps 9..12 were dropped and re-run, not duplicated
  for (size_t i = 0; i < 12; ++i) REQUIRE(resumed[i] == full[i]);
}

TEST_CASE("trainer: a non-finite gradient skips the update; max_skipped in a row stops the run", "[train]") {
  test::TempDir data("trdata"), run("trrun");
  test::write_markov_shards(data.str(), 32, 20000, 4000, 3);
  const Config cfg = small_run(data, {"train.max_skipped=3"});
  RunOptions ro{run / "a", false, {}};
  ro.after_backward = [](int step, std::span<float> g) {
    if (step == 2) g[0] = NAN;
  };
  const RunSummary s = train(cfg, ro);
  REQUIRE(s.steps_done == 12);
  const auto recs = io::read_jsonl(run / "a/metrics.jsonl");
  REQUIRE(recs.at(2).at("skipped_steps").get<int>() == 1);
  REQUIRE(recs.back().at("skipped_steps").get<int>() == 1);

  RunOptions rb{run / "b", false, {}};
  rb.after_backward = [](int step, std::span<float> g) {
    if (step >= 5) g[0] = INFINITY;
  };
  REQUIRE_THROWS_WITH(train(cfg, rb), Catch::Contains("train.max_skipped"));
  // The last good checkpoint (step 4) is kept and is the latest.
  const auto latest = io::find_latest_checkpoint(run / "b");
  REQUIRE(latest.has_value());
  REQUIRE(fs::path(*latest).filename() == "00000004");
}

TEST_CASE("trainer: SIGINT/SIGTERM stop after the current step with a checkpoint", "[train]") {
  test::TempDir data("trdata"), run("trrun");
  test::write_markov_shards(data.str(), 32, 20000, 4000, 4);
  const Config cfg = small_run(data, {"train.checkpoint_every=0"});
  for (int sig : {SIGINT, SIGTERM}) {
    const std::string dir = run / ("s" + std::to_string(sig));
    RunOptions ro{dir, false, {}};
    ro.after_backward = [sig](int step, std::span<float>) {
      if (step == 4) std::raise(sig);
    };
    const RunSummary s = train(cfg, ro);
    REQUIRE(s.interrupted);
    REQUIRE(s.steps_done == 5);
    const auto latest = io::find_latest_checkpoint(dir);
    REQUIRE(latest.has_value());
    REQUIRE(fs::path(*latest).filename() == "00000005");
    const RunSummary r = train(cfg, {dir, true, {}});
    REQUIRE(r.steps_done == 12);
  }
}

TEST_CASE("trainer: refuses to overwrite a run and to resume a run without checkpoints", "[train]") {
  test::TempDir data("trdata"), run("trrun");
  test::write_markov_shards(data.str(), 32, 20000, 4000, 5);
  const Config cfg = small_run(data, {"train.max_steps=4"});
  train(cfg, {run / "a", false, {}});
  REQUIRE_THROWS_WITH(train(cfg, {run / "a", false, {}}), Catch::Contains("--resume"));
  REQUIRE_THROWS_WITH(train(cfg, {run / "empty", true, {}}), Catch::Contains("no checkpoint"));
}
