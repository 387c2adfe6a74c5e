// Data parallelism: the bucket layout, the ZeRO-1 step against the all-reduce step, and whole
// training runs on 1..4 in-process ranks against one rank with the same global batch.
//
// Tolerance of the run comparisons, and why they are not bitwise: W ranks compute each
// micro-batch's mean loss and gradient over B/W sequences and average the W results, one rank
// sums over all B sequences at once; the float sums are the same numbers added in a different
// order, so gradients differ by a few fp32 ulps (~1e-7 relative), and AdamW, which divides by
// sqrt(v), carries such differences into the weights. Over a dozen steps of this small model
// the losses stay within 1e-6 (measured: at most 1.6e-8); a wrong slice of the data, a missing 1/W
// or a stale shard moves them by 1e-2 or more.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>

#include "common/run_metrics.hpp"
#include "common/synthetic_data.hpp"
#include "common/temp_dir.hpp"
#include "config/config.hpp"
#include "core/error.hpp"
#include "core/rng.hpp"
#include "dist/data_parallel.hpp"
#include "dist/in_process_comm.hpp"
#include "io/checkpoint_dir.hpp"
#include "io/jsonl.hpp"
#include "io/safetensors.hpp"
#include "model/gpt.hpp"
#include "optim/adamw.hpp"
#include "train/trainer.hpp"

using namespace pg;
namespace fs = std::filesystem;

namespace {

constexpr double kLossTol = 1e-6;

Config dp_run(const test::TempDir& data, int world, std::vector<std::string> extra = {}) {
  // Global batch 12 sequences = batch_size * world_size, accumulated twice.
  std::vector<std::string> sets = {"model.n_layer=2",        "model.n_head=2",        "model.d_model=16",
                                   "model.vocab_size=32",    "model.seq_len=16",      "train.grad_accum=2",
                                   "train.max_steps=10",     "train.eval_every=5",    "train.eval_batches=2",
                                   "train.log_every=1",      "train.checkpoint_every=4", "optim.warmup_steps=2",
                                   "optim.lr=0.01",          "train.threads=1",       "dist.bucket_mb=0.004",
                                   "train.batch_size=" + std::to_string(12 / world),
                                   "dist.cpu_ranks=" + std::to_string(world),
                                   "data.train=" + data / "syn_train_*.bin", "data.val=" + data / "syn_val_*.bin"};
  sets.insert(sets.end(), extra.begin(), extra.end());
  return default_config(sets);
}


void require_close(const std::vector<double>& a, const std::vector<double>& b, double tol) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    CAPTURE(i, a[i], b[i]);
    REQUIRE(std::abs(a[i] - b[i]) <= tol);
  }
}

}  // namespace

TEST_CASE("dist: buckets tile the padded buffer in backward order, W parts of whole 64-element blocks", "[dist]") {
  const Config cfg = default_config({"model.n_layer=3", "model.d_model=32", "model.vocab_size=100"});
  const ParamTable table = build_gpt_params(cfg);
  for (int W : {1, 2, 3, 4, 7}) {
    for (double mb : {0.001, 0.01, 100.0}) {
      CAPTURE(W, mb);
      const auto L = dist::make_buckets(table, W, mb);
      REQUIRE(L.padded_total >= table.total());
      REQUIRE(L.padded_total % (64 * W) == 0);
      REQUIRE(!L.buckets.empty());
      REQUIRE(L.buckets.front().end == L.padded_total);
      REQUIRE(L.buckets.back().begin == 0);
      for (size_t k = 0; k < L.buckets.size(); ++k) {
        const auto& b = L.buckets[k];
        REQUIRE(b.end > b.begin);
        REQUIRE((b.end - b.begin) % (64 * W) == 0);
        if (k > 0) REQUIRE(b.end == L.buckets[k - 1].begin);  // contiguous, descending
      }
      if (mb >= 100.0) REQUIRE(L.buckets.size() == 1);
      if (mb <= 0.001) REQUIRE(L.buckets.size() > 3);
    }
  }
}

TEST_CASE("dist: a ZeRO-1 step (reduce-scatter, sharded AdamW, all-gather) equals the all-reduce step bitwise",
          "[dist]") {
  const uint64_t seed = GENERATE(5u, 6u);
  const int W = GENERATE(2, 3, 4);
  const std::string dtype = GENERATE(std::string("fp32"), std::string("bf16"));
  CAPTURE(seed, W, dtype);
  Config cfg = default_config({"model.n_layer=2", "model.d_model=32", "model.vocab_size=50", "dist.bucket_mb=0.01",
                               "dist.grad_dtype=" + dtype});
  const ParamTable table = build_gpt_params(cfg);
  // Per-rank gradients, the same for both runs.
  const auto layout = dist::make_buckets(table, W, cfg.dist.bucket_mb);
  std::vector<std::vector<float>> g0(static_cast<size_t>(W), std::vector<float>(size_t(layout.padded_total), 0.0f));
  Rng rng(seed);
  for (auto& g : g0)
    for (int64_t i = 0; i < table.total(); ++i) g[size_t(i)] = float(rng.normal() * 0.01);

  auto run = [&](int zero) {
    Config c = cfg;
    c.dist.zero = zero;
    std::vector<std::vector<float>> params(static_cast<size_t>(W));
    std::vector<double> norms(static_cast<size_t>(W));
    dist::run_ranks(W, 30, [&](dist::Comm& comm) {
      dist::DataParallel dp(comm, table, c.dist);
      std::vector<float>& p = params[size_t(comm.rank())];
      p.assign(size_t(dp.padded_total()), 0.0f);
      init_gpt_params(c, table, p, 1);
      AdamW adamw(c.optim, table, dp.owned());
      for (int t = 1; t <= 3; ++t) {  // three steps: moments carry over
        std::vector<float> g = g0[size_t(comm.rank())];
        for (float& e : g) e *= float(t);
        dp.reduce_grads(g);
        norms[size_t(comm.rank())] = dp.grad_norm(g);
        adamw.step(p, g, 1e-2, t);
        dp.gather_params(p);
      }
    });
    for (int r = 1; r < W; ++r) REQUIRE(params[size_t(r)] == params[0]);  // replicas agree
    return std::make_pair(params[0], norms[0]);
  };
  const auto [p_allreduce, n_allreduce] = run(0);
  const auto [p_zero, n_zero] = run(1);
  REQUIRE(p_zero == p_allreduce);  // AdamW is elementwise: the shards compute the same numbers
  REQUIRE(n_zero == Approx(n_allreduce).epsilon(1e-12));  // same squares, summed per shard
}

TEST_CASE("dist: 1, 2, 3 and 4 in-process ranks give the same losses as one rank with the same global batch",
          "[dist]") {
  test::TempDir data("dpdata"), run("dprun");
  test::write_markov_shards(data.str(), 32, 20000, 4000, 7);
  const std::string zero = GENERATE(std::string("0"), std::string("1"));
  CAPTURE(zero);
  train(dp_run(data, 1, {"dist.zero=" + zero}), {run / "w1", false, {}});
  const auto ref = test::run_column(run / "w1", "train_loss");
  const auto ref_val = test::run_column(run / "w1", "val_loss");
  REQUIRE(ref.size() == 10);
  REQUIRE(ref_val.size() == 2);
  REQUIRE(ref.back() < ref.front() - 0.3);  // it learns
  for (int W : {2, 3, 4}) {
    CAPTURE(W);
    const std::string dir = run / ("w" + std::to_string(W));
    const RunSummary s = train(dp_run(data, W, {"dist.zero=" + zero}), {dir, false, {}});
    REQUIRE(s.steps_done == 10);
    require_close(test::run_column(dir, "train_loss"), ref, kLossTol);
    require_close(test::run_column(dir, "val_loss"), ref_val, kLossTol);
    REQUIRE(io::find_latest_checkpoint(dir).has_value());
  }
}

TEST_CASE("dist: bf16 gradient reduction stays close to the fp32 run", "[dist]") {
  test::TempDir data("dpdata"), run("dprun");
  test::write_markov_shards(data.str(), 32, 20000, 4000, 8);
  train(dp_run(data, 1), {run / "ref", false, {}});
  train(dp_run(data, 2, {"dist.grad_dtype=bf16"}), {run / "bf16", false, {}});
  const auto ref = test::run_column(run / "ref", "train_loss"), got = test::run_column(run / "bf16", "train_loss");
  // bf16 keeps 8 significant bits (relative rounding 2^-9): the losses follow the fp32 run
  // to about 1e-4 over these steps (measured: at most 1.3e-4), but are not equal to it.
  require_close(got, ref, 2e-3);
  bool differs = false;
  for (size_t i = 0; i < ref.size(); ++i) differs |= std::abs(got[i] - ref[i]) > kLossTol;
  REQUIRE(differs);
}

TEST_CASE("dist: a 2-rank checkpoint resumes on 3 ranks (and a ZeRO-1 one on 1 rank) with the same losses",
          "[dist]") {
  test::TempDir data("dpdata"), run("dprun");
  test::write_markov_shards(data.str(), 32, 20000, 4000, 9);
  const std::string zero = GENERATE(std::string("0"), std::string("1"));
  CAPTURE(zero);
  train(dp_run(data, 2, {"dist.zero=" + zero}), {run / "two", false, {}});
  const auto full = test::run_column(run / "two", "train_loss");

  fs::create_directories(run / "cut/checkpoints");
  fs::copy(run / "two/checkpoints/00000004", run / "cut/checkpoints/00000004", fs::copy_options::recursive);
  const int resume_world = zero == "1" ? 1 : 3;
  const RunSummary s = train(dp_run(data, resume_world, {"dist.zero=" + zero}), {run / "cut", true, {}});
  REQUIRE(s.steps_done == 10);
  const auto resumed = test::run_column(run / "cut", "train_loss");
  REQUIRE(resumed.size() == 6);  // steps 5..10
  require_close(resumed, std::vector<double>(full.begin() + 4, full.end()), kLossTol);
}

TEST_CASE("dist: with optim.kind = muon (NS split over ranks), 2 in-process ranks give the losses of one rank, "
          "also under ZeRO-1, whose checkpoint resumes on 3 ranks",
          "[dist]") {
  test::TempDir data("dpdata"), run("dprun");
  test::write_markov_shards(data.str(), 32, 20000, 4000, 10);
  // Newton-Schulz in fp32: with the default bf16 rounding, an ulp of difference in a gradient
  // can flip a bf16 rounding and move the losses by ~1e-5, which would hide a real error's size.
  train(dp_run(data, 1, {"optim.kind=muon", "optim.ns_precision=fp32"}), {run / "w1", false, {}});
  const RunSummary s = train(dp_run(data, 2, {"optim.kind=muon", "optim.ns_precision=fp32"}), {run / "w2", false, {}});
  REQUIRE(s.steps_done == 10);
  const auto ref = test::run_column(run / "w1", "train_loss");
  REQUIRE(ref.size() == 10);
  REQUIRE(ref.back() < ref.front() - 0.3);  // it learns
  // On 2 ranks each matrix is orthogonalised on its owner and all-gathered (dist/muon_split.hpp);
  // a matrix lost or misplaced in the exchange moves the losses by far more than this tolerance.
  require_close(test::run_column(run / "w2", "train_loss"), ref, kLossTol);
  require_close(test::run_column(run / "w2", "val_loss"), test::run_column(run / "w1", "val_loss"), kLossTol);

  // ZeRO-1 beside Muon: the gradients are all-reduced (an owner needs its matrices' whole
  // gradients), AdamW's moments sharded, Muon's state whole on every rank.
  const std::vector<std::string> zero = {"optim.kind=muon", "optim.ns_precision=fp32", "dist.zero=1"};
  train(dp_run(data, 2, zero), {run / "z2", false, {}});
  require_close(test::run_column(run / "z2", "train_loss"), ref, kLossTol);
  require_close(test::run_column(run / "z2", "val_loss"), test::run_column(run / "w1", "val_loss"), kLossTol);
  // Its checkpoint holds the whole state (Muon's momentum and the gathered AdamW moments), by name.
  const auto latest = io::find_latest_checkpoint(run / "z2");
  REQUIRE(latest.has_value());
  const io::SafetensorsReader r(*latest + "/optimizer.safetensors");
  CHECK(r.has("h.0.mlp.fc.weight.momentum_buffer"));
  CHECK(r.has("wte.exp_avg"));
  // Resumed from step 4 on 3 ranks (ZeRO-1 again): the same later losses.
  fs::create_directories(run / "z3/checkpoints");
  fs::copy(run / "z2/checkpoints/00000004", run / "z3/checkpoints/00000004", fs::copy_options::recursive);
  const RunSummary s3 = train(dp_run(data, 3, zero), {run / "z3", true, {}});
  REQUIRE(s3.steps_done == 10);
  const auto full = test::run_column(run / "z2", "train_loss"), resumed = test::run_column(run / "z3", "train_loss");
  REQUIRE(resumed.size() == 6);  // steps 5..10
  require_close(resumed, std::vector<double>(full.begin() + 4, full.end()), kLossTol);
}
