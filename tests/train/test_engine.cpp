// What the trainer decides about devices without needing one: which configs --device cuda
// refuses (each error names its key), the error for --device cuda where there is no GPU or no
// CUDA backend, MFU's FLOP count and peak, and the mfu field in metrics.jsonl.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "common/synthetic_data.hpp"
#include "common/temp_dir.hpp"
#include "config/config.hpp"
#include "core/error.hpp"
#include "io/jsonl.hpp"
#include "model/gpt.hpp"
#include "train/engine.hpp"
#include "train/trainer.hpp"

using namespace pg;

namespace {

Config tiny_run(const test::TempDir& data, std::vector<std::string> extra = {}) {
  std::vector<std::string> sets = {"model.n_layer=1",     "model.n_head=2",       "model.d_model=16",
                                   "model.vocab_size=32", "model.seq_len=16",     "train.batch_size=4",
                                   "train.max_steps=4",   "train.eval_every=0",   "train.eval_batches=1",
                                   "train.log_every=1",   "train.checkpoint_every=0", "train.threads=1",
                                   "data.train=" + data / "syn_train_*.bin", "data.val=" + data / "syn_val_*.bin"};
  sets.insert(sets.end(), extra.begin(), extra.end());
  return default_config(sets);
}

}  // namespace

TEST_CASE("engine: --device cuda refuses what the CUDA trainer lacks, naming the key", "[train]") {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"model.variant=moe", "moe.n_expert=4", "model.norm=none"}, "model.norm = none"},
      {{"dist.cpu_ranks=2"}, "dist.cpu_ranks"},
      {{"train.batch_size=40000", "model.n_head=2", "model.d_model=64"}, "train.batch_size * model.n_head"},
  };
  for (const auto& [sets, key] : cases) {
    CAPTURE(key);
    const std::string why = cuda_trainer_unsupported(default_config(sets), 1);
    CHECK_THAT(why, Catch::Contains(key));
    CHECK(why.find('\n') == std::string::npos);
  }
  // Several processes (scripts/launch.sh) train over NCCL where the build has it; else one line
  // naming WORLD_SIZE. dist.grad_dtype = bf16 and Muon are taken on any world size.
#ifdef POLARGPT_WITH_NCCL
  CHECK(cuda_trainer_unsupported(default_config(), 2).empty());
  CHECK(cuda_world_size_unsupported(8).empty());
  CHECK(cuda_trainer_unsupported(default_config({"dist.grad_dtype=bf16", "optim.kind=muon"}), 8).empty());
  CHECK(cuda_trainer_unsupported(default_config({"dist.zero=1"}), 2).empty());  // ZeRO-1 runs on cuda
  CHECK(cuda_trainer_unsupported(default_config({"dist.zero=1", "optim.kind=muon"}), 4).empty());
#else
  CHECK_THAT(cuda_trainer_unsupported(default_config(), 2), Catch::Contains("WORLD_SIZE=2"));
  CHECK(cuda_trainer_unsupported(default_config(), 2).find('\n') == std::string::npos);
#endif
  CHECK(cuda_trainer_unsupported(default_config(), 1).empty());
  CHECK(cuda_trainer_unsupported(default_config({"dist.zero=1"}), 1).empty());
  CHECK(cuda_trainer_unsupported(default_config({"model.pos=rope", "model.qk_norm=true", "model.norm=rmsnorm"}), 1)
            .empty());
  // Models without norms, the Lipschitz variant among them, train on the GPU.
  CHECK(cuda_trainer_unsupported(default_config({"model.norm=none"}), 1).empty());
  CHECK(cuda_trainer_unsupported(default_config({"model.variant=lipschitz", "model.norm=none", "model.bias=false",
                                                 "model.tie_embeddings=false", "model.pos=rope"}),
                                 1)
            .empty());
  // Muon and the spectral projection run on the GPU (CudaMuon, CudaSpectral).
  CHECK(cuda_trainer_unsupported(default_config({"optim.kind=muon", "spectral.method=hardcap"}), 1).empty());
  CHECK(cuda_trainer_unsupported(default_config({"model.variant=moe", "moe.n_expert=4"}), 1).empty());
  CHECK_THAT(cuda_trainer_unsupported(default_config({"model.variant=moe", "moe.n_expert=4", "moe.balance=bias"}), 2),
             Catch::Contains("moe.balance = bias"));
}

TEST_CASE("engine: --device cuda without a GPU or CUDA backend is one line naming train.device", "[train]") {
  std::string why;
  if (cuda_trainer_available(&why)) {
    SUCCEED("a GPU is present: the GPU tests cover --device cuda");
    return;
  }
  CAPTURE(why);
  test::TempDir data("endata"), run("enrun");
  test::write_markov_shards(data.str(), 32, 4000, 2000, 1);
  const Config cfg = tiny_run(data, {"train.device=cuda"});
  REQUIRE_THROWS_AS(train(cfg, {run / "a", false, {}}), UserError);
  REQUIRE_THROWS_WITH(train(cfg, {run / "a", false, {}}), Catch::Contains("train.device = cuda") && Catch::Contains(why));
  // auto falls back to the CPU.
  const RunSummary s = train(tiny_run(data, {"train.device=auto"}), {run / "b", false, {}});
  REQUIRE(s.steps_done == 4);
}

TEST_CASE("engine: FLOPs per token are 6 N + 12 L T C with N the matmul parameters", "[train]") {
  // GPT-2 124M (tied head, learned positions): N = all parameters but wpe (wte counts once, as
  // the head's matmul).
  const Config cfg = default_config({"model.n_layer=12", "model.n_head=12", "model.d_model=768",
                                     "model.vocab_size=50304", "model.seq_len=1024"});
  const ParamTable t = build_gpt_params(cfg);
  const double N = double(t.n_params()) - 1024.0 * 768;
  REQUIRE(flops_per_token(cfg, t) == Approx(6 * N + 12.0 * 12 * 1024 * 768).epsilon(1e-12));
  REQUIRE(N == Approx(124.0e6).epsilon(0.01));
  // Untied: the head is its own tensor, wte drops out.
  const Config u = default_config({"model.tie_embeddings=false", "model.pos=rope"});
  const ParamTable tu = build_gpt_params(u);
  const double Nu = double(tu.n_params()) - double(u.model.vocab_size) * u.model.d_model;
  REQUIRE(flops_per_token(u, tu) == Approx(6 * Nu + 12.0 * u.model.n_layer * u.model.seq_len * u.model.d_model));

  REQUIRE(peak_tflops_for_device("NVIDIA H100 80GB HBM3") == 989.4);
  REQUIRE(peak_tflops_for_device("NVIDIA H200") == 989.4);
  REQUIRE(peak_tflops_for_device("NVIDIA A100-SXM4-80GB") == 0.0);
}

TEST_CASE("engine: mfu is in metrics.jsonl exactly when a peak is known", "[train]") {
  test::TempDir data("endata"), run("enrun");
  test::write_markov_shards(data.str(), 32, 4000, 2000, 2);
  const Config with_peak = tiny_run(data, {"train.device=cpu", "train.peak_tflops=0.5"});
  train(with_peak, {run / "p", false, {}});
  const double fpt = flops_per_token(with_peak, build_gpt_params(with_peak));
  for (const auto& r : io::read_jsonl(run / "p/metrics.jsonl")) {
    REQUIRE(r.contains("mfu"));
    REQUIRE(r.at("mfu").get<double>() ==
            Approx(r.at("tokens_per_s").get<double>() * fpt / 0.5e12).epsilon(1e-9));
  }
  train(tiny_run(data, {"train.device=cpu"}), {run / "n", false, {}});
  for (const auto& r : io::read_jsonl(run / "n/metrics.jsonl")) REQUIRE_FALSE(r.contains("mfu"));
}

TEST_CASE("engine: WORLD_SIZE > 1 on the cpu is one line naming WORLD_SIZE and dist.cpu_ranks", "[train]") {
  ::setenv("WORLD_SIZE", "2", 1), ::setenv("RANK", "1", 1);
  std::string what;
  try {
    train(default_config({"train.device=cpu"}), {"unused_run_dir", false, {}});
  } catch (const UserError& e) {
    what = e.what();
  }
  ::unsetenv("WORLD_SIZE"), ::unsetenv("RANK");
  CHECK_THAT(what, Catch::Contains("WORLD_SIZE=2"));
  CHECK_THAT(what, Catch::Contains("dist.cpu_ranks"));
  CHECK(what.find('\n') == std::string::npos);
}

TEST_CASE("engine: a gradient bucket's backward stage is the earliest-finishing block among its tensors", "[train]") {
  // Tensor names give each tensor's stage independently of the offsets the engine reads:
  // h.<l>.* -> l, ln_f and an untied lm_head -> n_layer, everything else (wte, wpe) -> -1.
  const bool tied = GENERATE(true, false);
  const int W = GENERATE(1, 3);
  CAPTURE(tied, W);
  const Config cfg = default_config({"model.n_layer=3", "model.d_model=64", "model.n_head=2", "model.vocab_size=96",
                                     std::string("model.tie_embeddings=") + (tied ? "true" : "false")});
  const ParamTable table = build_gpt_params(cfg);
  const dist::BucketLayout layout = dist::make_buckets(table, W, 0.02);  // ~5K floats: several per block
  REQUIRE(layout.buckets.size() > 6);
  const std::vector<int> stages = gpt_bucket_stages(cfg, table, layout.buckets);
  REQUIRE(stages.size() == layout.buckets.size());
  auto stage_of = [&](const std::string& name) {
    if (name.rfind("h.", 0) == 0) return std::stoi(name.substr(2, name.find('.', 2) - 2));
    if (name.rfind("ln_f", 0) == 0 || name.rfind("lm_head", 0) == 0) return cfg.model.n_layer;
    return -1;
  };
  for (size_t k = 0; k < stages.size(); ++k) {
    const dist::Bucket& b = layout.buckets[k];
    int want = cfg.model.n_layer;
    for (const ParamInfo& e : table.entries())
      if (e.offset < b.end && e.offset + e.numel > b.begin) want = std::min(want, stage_of(e.name));
    CAPTURE(k, b.begin, b.end);
    CHECK(stages[k] == want);
    if (k > 0) CHECK(stages[k] <= stages[k - 1]);  // backward order: ready buckets form a prefix
  }
  CHECK(stages.front() >= cfg.model.n_layer - 1);  // the first bucket is ready early in the backward
  CHECK(stages.back() == -1);                       // the one holding wte only at the end
}
