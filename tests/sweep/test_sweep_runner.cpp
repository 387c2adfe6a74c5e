// Running sweeps as child processes of the polargpt binary: a failing run is recorded and the
// sweep goes on; a restarted sweep skips finished runs and resumes an unfinished one from its
// checkpoint to the same losses; --gpus runs one child per device slot; the summary table.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "common/synthetic_data.hpp"
#include "common/temp_dir.hpp"
#include "core/error.hpp"
#include "io/jsonl.hpp"
#include "sweep/runner.hpp"
#include "sweep/summary.hpp"

using namespace pg;
namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A sweep of tiny runs on a synthetic corpus in data; `extra` is merged into the sweep JSON.
Sweep tiny_sweep(const test::TempDir& data, const char* extra, int max_steps = 4) {
  ordered_json j = ordered_json::parse(extra);
  ordered_json set = {{"model.n_layer", 1},      {"model.n_head", 2},          {"model.d_model", 16},
                      {"model.vocab_size", 32},  {"model.seq_len", 8},         {"train.batch_size", 2},
                      {"train.max_steps", max_steps}, {"train.checkpoint_every", 2}, {"train.eval_every", 0},
                      {"train.eval_batches", 1}, {"train.log_every", 1},       {"train.threads", 1},
                      {"optim.warmup_steps", 1},
                      {"data.train", data / "syn_train_*.bin"}, {"data.val", data / "syn_val_*.bin"}};
  if (j.contains("set")) set.update(j["set"]);
  j["set"] = set;
  return parse_sweep(j, "test-sweep.json");
}

SweepOptions options(const test::TempDir& out) {
  SweepOptions o;
  o.out_dir = out / "sweep";
  o.exe = POLARGPT_BINARY;
  return o;
}

std::vector<std::vector<std::string>> csv_rows(const std::string& path) {
  std::vector<std::vector<std::string>> rows;
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);) {
    std::vector<std::string> cells;
    std::string cell;
    bool quoted = false;
    for (char c : line) {
      if (c == '"') quoted = !quoted;
      else if (c == ',' && !quoted) cells.push_back(cell), cell.clear();
      else cell += c;
    }
    cells.push_back(cell);
    rows.push_back(cells);
  }
  return rows;
}

}  // namespace

TEST_CASE("sweep runner: a failing run is recorded as failed and the sweep goes on", "[sweep]") {
  test::TempDir data("swdata"), out("swout");
  test::write_markov_shards(data.str(), 32, 4000, 1000, 5);
  const Sweep sw = tiny_sweep(data, R"({"list": [{"optim.lr": 0.01}, {"data.train": "no/such/*.bin"}, {"optim.lr": 0.02}]})");
  const SweepOptions o = options(out);
  const SweepResult r = run_sweep(sw, o);
  REQUIRE(r.done == 2);
  REQUIRE(r.failed == 1);
  REQUIRE_FALSE(r.interrupted);
  REQUIRE(read_run_status(o.out_dir + "/optim.lr=0.01").status == "done");
  const RunStatus bad = read_run_status(o.out_dir + "/data.train=no_such__.bin");
  REQUIRE(bad.status == "failed");
  REQUIRE(bad.exit_code == 2);
  REQUIRE_THAT(bad.error, Catch::Contains("data.train"));
  REQUIRE(read_run_status(o.out_dir + "/optim.lr=0.02").status == "done");  // ran after the failure
  REQUIRE(io::read_jsonl(o.out_dir + "/optim.lr=0.02/metrics.jsonl").back().at("step") == 4);

  // The summary: every run, finished ones first (by val loss), the failure with its error line.
  const auto rows = csv_rows(o.out_dir + "/summary.csv");
  REQUIRE(rows.size() == 4);
  REQUIRE(rows[0] == std::vector<std::string>{"run", "optim.lr", "data.train", "status", "steps", "final_train_loss",
                                              "final_val_loss", "best_val_loss", "tokens_per_s", "wall_s"});
  REQUIRE(rows[3][0] == "data.train=no_such__.bin");
  REQUIRE(rows[3][3] == "failed");
  REQUIRE(std::stod(rows[1][6]) <= std::stod(rows[2][6]));
  REQUIRE(rows[1][3] == "done");
  REQUIRE(rows[1][4] == "4");
  const std::string md = slurp(o.out_dir + "/summary.md");
  REQUIRE_THAT(md, Catch::Contains("3 runs: 2 done, 1 failed"));
  REQUIRE_THAT(md, Catch::Contains("no files match"));

  // Started again: nothing to do, the failure is not retried unless asked.
  REQUIRE(plan_sweep(sw, o.out_dir, false) ==
          std::vector<RunState>{RunState::done, RunState::failed, RunState::done});
  REQUIRE(plan_sweep(sw, o.out_dir, true)[1] == RunState::fresh);
}

TEST_CASE("sweep runner: a restarted sweep skips finished runs and resumes the unfinished one", "[sweep]") {
  test::TempDir data("swdata"), out("swout");
  test::write_markov_shards(data.str(), 32, 4000, 1000, 6);
  const Sweep sw = tiny_sweep(data, R"({"grid": {"optim.lr": [0.01, 0.02]}})", 6);
  const SweepOptions o = options(out);
  REQUIRE(run_sweep(sw, o).done == 2);
  const std::string a = o.out_dir + "/optim.lr=0.01", b = o.out_dir + "/optim.lr=0.02";
  const auto full_b = io::read_jsonl(b + "/metrics.jsonl");
  const std::string log_a = slurp(a + "/train.log"), metrics_a = slurp(a + "/metrics.jsonl");

  // Make b look stopped after step 2: later checkpoints gone, status interrupted.
  fs::remove_all(b + "/checkpoints/00000006");
  fs::remove_all(b + "/checkpoints/00000004");
  std::ofstream(b + "/checkpoints/latest") << "00000002\n";
  std::ofstream(b + "/status.json") << R"({"status": "interrupted", "attempts": 1, "wall_s": 1.0})";
  REQUIRE(plan_sweep(sw, o.out_dir, false) == std::vector<RunState>{RunState::done, RunState::resume});

  const SweepResult r = run_sweep(sw, o);
  REQUIRE(r.done == 2);
  REQUIRE(slurp(a + "/train.log") == log_a);  // a was not started again
  REQUIRE(slurp(a + "/metrics.jsonl") == metrics_a);
  const std::string log_b = slurp(b + "/train.log");
  REQUIRE_THAT(log_b, Catch::Contains("==== attempt 2: "));
  REQUIRE_THAT(log_b, Catch::Contains("--resume " + b));
  REQUIRE(read_run_status(b).attempts == 2);
  REQUIRE(read_run_status(b).status == "done");
  const auto resumed = io::read_jsonl(b + "/metrics.jsonl");  // the CPU resumes exactly
  REQUIRE(resumed.size() == full_b.size());
  for (size_t i = 0; i < resumed.size(); ++i) REQUIRE(resumed[i].at("train_loss") == full_b[i].at("train_loss"));

  // A sweep whose config for an existing run changed refuses to start, naming the file.
  const Sweep changed = tiny_sweep(data, R"({"grid": {"optim.lr": [0.01, 0.02]}, "set": {"train.seed": 9}})", 6);
  REQUIRE_THROWS_WITH(plan_sweep(changed, o.out_dir, false), Catch::Contains(a + "/config.json"));
}

TEST_CASE("sweep runner: --gpus runs one child per device at a time, with CUDA_VISIBLE_DEVICES", "[sweep]") {
  test::TempDir data("swdata"), out("swout");
  test::write_markov_shards(data.str(), 32, 4000, 1000, 7);
  const Sweep sw = tiny_sweep(data, R"({"grid": {"train.seed": [1, 2, 3]}})");
  SweepOptions o = options(out);
  o.gpus = {"0", "1"};
  REQUIRE(run_sweep(sw, o).done == 3);
  std::set<std::string> devices;
  for (const auto& run : sw.runs) {
    const RunStatus st = read_run_status(o.out_dir + "/" + run.name);
    REQUIRE(st.status == "done");
    devices.insert(st.device);
    REQUIRE_THAT(slurp(o.out_dir + "/" + run.name + "/train.log"),
                 Catch::Contains("on CUDA_VISIBLE_DEVICES=" + st.device + ":"));
  }
  REQUIRE(devices == std::set<std::string>{"0", "1"});  // the first two start together
}

TEST_CASE("sweep summary: sorted by val loss, best val, median tokens/s, certificate column", "[sweep]") {
  test::TempDir out("swsum");
  const Sweep sw = parse_sweep(ordered_json::parse(R"({"grid": {"optim.lr": [0.1, 0.2, 0.3, 0.4]}})"), "s.json");
  auto make = [&](const std::string& name, const std::vector<nlohmann::json>& recs, const char* status) {
    fs::create_directories(out / name);
    io::JsonlWriter w(out / name + "/metrics.jsonl", false);
    for (const auto& r : recs) w.write(r);
    std::ofstream(out / name + "/status.json") << "{\"status\": \"" << status << "\", \"wall_s\": 12.5}";
  };
  make("optim.lr=0.1",
       {{{"step", 1}, {"train_loss", 5.0}, {"tokens_per_s", 100.0}},
        {{"step", 2}, {"train_loss", 4.0}, {"tokens_per_s", 300.0}, {"val_loss", 3.0}, {"lipschitz_bound", 40.0}},
        {{"step", 3}, {"train_loss", 3.5}, {"tokens_per_s", 200.0}, {"val_loss", 3.5}, {"lipschitz_bound", 50.0}}},
       "done");
  make("optim.lr=0.2",
       {{{"step", 2}, {"train_loss", 2.0}, {"tokens_per_s", 10.0}, {"val_loss", 2.5}, {"lipschitz_bound", nullptr},
         {"log10_lipschitz_bound", 312.25}}},
       "done");
  make("optim.lr=0.3", {{{"step", 1}, {"train_loss", nullptr}, {"tokens_per_s", 10.0}}}, "failed");
  write_summary(sw, out.str());
  const auto rows = csv_rows(out / "summary.csv");
  REQUIRE(rows.size() == 5);
  REQUIRE(rows[0][9] == "lipschitz_bound");
  REQUIRE(rows[0][10] == "log10_lipschitz_bound");
  REQUIRE(rows[1] == std::vector<std::string>{"optim.lr=0.2", "0.2", "done", "2", "2.000000", "2.500000", "2.500000",
                                              "10.0", "12.5", "", "312.250000"});
  REQUIRE(rows[2] == std::vector<std::string>{"optim.lr=0.1", "0.1", "done", "3", "3.500000", "3.500000", "3.000000",
                                              "200.0", "12.5", "50", "1.698970"});
  REQUIRE(rows[3][0] == "optim.lr=0.3");
  REQUIRE(rows[3][2] == "failed");
  REQUIRE(rows[3][4] == "");  // no finite train loss
  REQUIRE(rows[4] == std::vector<std::string>{"optim.lr=0.4", "0.4", "pending", "0", "", "", "", "", "0.0", "", ""});
  const std::string md = slurp(out / "summary.md");
  REQUIRE_THAT(md, Catch::Contains("| certificate |"));
  REQUIRE_THAT(md, Catch::Contains("| 1 | 0.2 | done | 2 | 2.0000 | 2.5000 | 2.5000 | 10 | 0m12s | 10^312.2 |"));
  REQUIRE_THAT(md, Catch::Contains("| 2 | 0.1 | done | 3 | 3.5000 | 3.5000 | 3.0000 | 200 | 0m12s | 50 |"));
}
