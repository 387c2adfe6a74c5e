// The trainer on --device cuda, through the real train(): its loss curve against the CPU run's
// on the same data from the same init (the standard GPT; Muon with spectral projections; the
// lipschitz variant and its certificate); resume on cuda; checkpoints crossing backends (cuda -> cpu,
// cpu -> cuda) and evaluated by `eval`; the out-of-memory error; the refusals; skipped steps.
//
// Tolerance between backends: 3e-2 relative on every step's train loss and on the val loss. The
// GPU runs in bf16 (weights, activations: 2^-9 relative per rounding) and the difference grows a
// little each step; the CPU run is fp32. A resume on the same backend continues its curve to
// 5e-3 (only the order of atomic adds in a few backward kernels differs).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "common/free_port.hpp"
#include "common/run_metrics.hpp"
#include "common/svd.hpp"
#include "common/synthetic_data.hpp"
#include "common/temp_dir.hpp"
#include "config/config.hpp"
#include "core/error.hpp"
#include "gpu_testing.hpp"
#include "io/checkpoint_dir.hpp"
#include "io/jsonl.hpp"
#include "model/gpt.hpp"
#include "spectral/certificate.hpp"
#include "spectral/constrain.hpp"
#include "train/checkpoint.hpp"
#include "train/engine.hpp"
#include "train/trainer.hpp"

using namespace pg;
namespace fs = std::filesystem;

namespace {

constexpr double kTolBackends = 3e-2, kTolResume = 5e-3;

Config run_config(const test::TempDir& data, const std::string& device, std::vector<std::string> extra = {}) {
  std::vector<std::string> sets = {"model.n_layer=2",       "model.n_head=2",        "model.d_model=64",
                                   "model.d_ff=128",        "model.vocab_size=64",   "model.seq_len=32",
                                   "train.batch_size=8",    "train.max_steps=20",    "train.eval_every=10",
                                   "train.eval_batches=4",  "train.log_every=1",     "train.checkpoint_every=10",
                                   "optim.warmup_steps=2",  "optim.lr=3e-3",         "train.threads=2",
                                   "train.device=" + device,
                                   "data.train=" + data / "syn_train_*.bin", "data.val=" + data / "syn_val_*.bin"};
  sets.insert(sets.end(), extra.begin(), extra.end());
  return default_config(sets);
}


double rel(double a, double b) { return std::abs(a - b) / std::abs(b); }

// A run that stopped after its step-`step` checkpoint: that checkpoint and the metrics so far.
void cut_run(const std::string& from, const std::string& to, int step) {
  char name[16];
  std::snprintf(name, sizeof name, "%08d", step);
  fs::create_directories(to + "/checkpoints");
  fs::copy(from + "/checkpoints/" + name, to + "/checkpoints/" + name, fs::copy_options::recursive);
  fs::copy_file(from + "/metrics.jsonl", to + "/metrics.jsonl");
}

// Trains the same config on both backends into c and g (20 steps) and checks that the loss curves
// and the final val losses agree to kTolBackends and that the GPU run learned (its loss fell by
// `fall`). Returns the two summaries (cpu, cuda).
std::pair<RunSummary, RunSummary> train_both_and_compare(const test::TempDir& data, const std::vector<std::string>& sets,
                                                         const std::string& c, const std::string& g, double fall) {
  const RunSummary sc = train(run_config(data, "cpu", sets), {c, false, {}});
  const RunSummary sg = train(run_config(data, "cuda", sets), {g, false, {}});
  const auto lc = test::run_losses(c), lg = test::run_losses(g);
  REQUIRE(lc.size() == 20);
  REQUIRE(lg.size() == 20);
  for (size_t i = 0; i < 20; ++i) {
    CAPTURE(i, lc[i], lg[i]);
    CHECK(rel(lg[i], lc[i]) < kTolBackends);
  }
  CAPTURE(sc.final_val_loss, sg.final_val_loss);
  CHECK(rel(sg.final_val_loss, sc.final_val_loss) < kTolBackends);
  CHECK(lg.back() < lg.front() - fall);
  return {sc, sg};
}

// The largest row RMS of an embedding matrix in the weights w (the max-norm bounds it by 1).
double max_row_rms(const std::vector<float>& w, const ParamInfo& p) {
  double max_rms = 0.0;
  for (int64_t r = 0; r < p.rows(); ++r) {
    const float* row = w.data() + p.offset + r * p.cols();
    double s = 0.0;
    for (int64_t j = 0; j < p.cols(); ++j) s += double(row[j]) * row[j];
    max_rms = std::max(max_rms, std::sqrt(s / double(p.cols())));
  }
  return max_rms;
}

}  // namespace

TEST_CASE("cuda trainer: 20 steps agree with the cpu run to bf16 tolerance; mfu is logged", "[gpu][train]") {
  test::TempDir data("ctdata"), run("ctrun");
  test::write_markov_shards(data.str(), 64, 40000, 8000, 11);
  // A fall of 0.5: it learned, so the comparison is not of noise.
  const auto [c, g] = train_both_and_compare(data, {}, run / "cpu", run / "cuda", 0.5);
  CHECK(std::abs(g.final_val_acc - c.final_val_acc) < 0.05);

  // MFU: on an H100/H200 the peak is known; with train.peak_tflops it is whatever is given.
  const auto rg = test::run_records(run / "cuda");
  int dev = 0;
  cudaDeviceProp prop{};
  REQUIRE(cudaGetDevice(&dev) == cudaSuccess);
  REQUIRE(cudaGetDeviceProperties(&prop, dev) == cudaSuccess);
  CAPTURE(prop.name);
  if (peak_tflops_for_device(prop.name) > 0) {
    REQUIRE(rg.back().contains("mfu"));
    CHECK(rg.back().at("mfu").get<double>() > 0.0);
    CHECK(rg.back().at("mfu").get<double>() < 1.0);
  } else {
    CHECK_FALSE(rg.back().contains("mfu"));
  }
  CHECK_FALSE(test::run_records(run / "cpu").back().contains("mfu"));
}

TEST_CASE("cuda trainer: resume continues the curve; checkpoints cross backends both ways", "[gpu][train]") {
  test::TempDir data("ctdata"), run("ctrun");
  test::write_markov_shards(data.str(), 64, 40000, 8000, 12);
  train(run_config(data, "cuda"), {run / "gpu", false, {}});
  train(run_config(data, "cpu"), {run / "cpu", false, {}});
  const auto lg = test::run_losses(run / "gpu"), lc = test::run_losses(run / "cpu");
  REQUIRE(lg.size() == 20);

  // cuda -> cuda: steps 11..20 again.
  cut_run(run / "gpu", run / "gg", 10);
  REQUIRE(train(run_config(data, "cuda"), {run / "gg", true, {}}).steps_done == 20);
  const auto lgg = test::run_losses(run / "gg");
  REQUIRE(lgg.size() == 20);
  for (size_t i = 10; i < 20; ++i) {
    CAPTURE(i, lg[i], lgg[i]);
    CHECK(rel(lgg[i], lg[i]) < kTolResume);
  }
  // cuda -> cpu and cpu -> cuda: the continued curve is the other backend's, within bf16 tolerance
  // of the run it came from (a cold optimizer or fresh weights would show as a jump).
  cut_run(run / "gpu", run / "gc", 10);
  train(run_config(data, "cpu"), {run / "gc", true, {}});
  cut_run(run / "cpu", run / "cg", 10);
  train(run_config(data, "cuda"), {run / "cg", true, {}});
  const auto lgc = test::run_losses(run / "gc"), lcg = test::run_losses(run / "cg");
  REQUIRE(lgc.size() == 20);
  REQUIRE(lcg.size() == 20);
  for (size_t i = 10; i < 20; ++i) {
    CAPTURE(i, lg[i], lgc[i], lc[i], lcg[i]);
    CHECK(rel(lgc[i], lg[i]) < kTolBackends);
    CHECK(rel(lcg[i], lc[i]) < kTolBackends);
  }
  // eval --ckpt on a checkpoint the GPU wrote (fp32 master weights): the GPU run's val loss.
  const auto latest = io::find_latest_checkpoint(run / "gpu");
  REQUIRE(latest.has_value());
  const EvalResult ev = evaluate_checkpoint(*latest, 4);
  CAPTURE(ev.loss, test::run_records(run / "gpu").back().at("val_loss").get<double>());
  CHECK(rel(ev.loss, test::run_records(run / "gpu").back().at("val_loss").get<double>()) < kTolBackends);
}

TEST_CASE("cuda trainer: a run that does not fit names the bytes needed and free", "[gpu][train]") {
  test::TempDir data("ctdata"), run("ctrun");
  test::write_markov_shards(data.str(), 64, 40000, 8000, 13);
  // 2^22 tokens a micro-batch of a 4-layer d_model 1024 model: about 0.5 TB of activations.
  const Config cfg = run_config(data, "cuda", {"model.n_layer=4", "model.d_model=1024", "model.n_head=8",
                                               "model.seq_len=1024", "train.batch_size=4096"});
  try {
    train(cfg, {run / "oom", false, {}});
    FAIL("expected a UserError");
  } catch (const UserError& e) {
    const std::string msg = e.what();
    CAPTURE(msg);
    CHECK_THAT(msg, Catch::Contains("train.batch_size=4096"));
    CHECK_THAT(msg, Catch::Contains("bytes") && Catch::Contains("free"));
    CHECK_THAT(msg, Catch::Contains("parameters, gradients and optimizer state"));
    CHECK(msg.find('\n') == std::string::npos);
  }
}

TEST_CASE("cuda trainer: refusals name their key; a non-finite step is skipped", "[gpu][train]") {
  test::TempDir data("ctdata"), run("ctrun");
  test::write_markov_shards(data.str(), 64, 40000, 8000, 14);
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"model.variant=moe", "moe.n_expert=4", "model.norm=none"}, "model.norm = none"},
      {{"dist.cpu_ranks=2"}, "dist.cpu_ranks"},
      {{"train.batch_size=40000"}, "train.batch_size * model.n_head"},
  };
  int i = 0;
  for (const auto& [sets, key] : cases) {
    CAPTURE(key);
    REQUIRE_THROWS_AS(train(run_config(data, "cuda", sets), {run / std::to_string(i), false, {}}), UserError);
    REQUIRE_THROWS_WITH(train(run_config(data, "cuda", sets), {run / std::to_string(i++), false, {}}),
                        Catch::Contains(key));
  }
  // WORLD_SIZE=2 trains over NCCL (test_cuda_dist.cpp); a rank 1 that never comes is one line
  // after dist.timeout_s naming the missing rank.
  ::setenv("WORLD_SIZE", "2", 1), ::setenv("RANK", "0", 1), ::setenv("MASTER_ADDR", "127.0.0.1", 1);
  ::setenv("MASTER_PORT", std::to_string(test::free_port()).c_str(), 1);
#ifdef POLARGPT_WITH_NCCL
  CHECK_THROWS_WITH(train(run_config(data, "cuda", {"dist.timeout_s=1"}), {run / "ws", false, {}}),
                    Catch::Contains("missing: 1"));
#else
  CHECK_THROWS_WITH(train(run_config(data, "cuda"), {run / "ws", false, {}}), Catch::Contains("WORLD_SIZE=2"));
#endif
  ::unsetenv("WORLD_SIZE"), ::unsetenv("RANK"), ::unsetenv("MASTER_ADDR"), ::unsetenv("MASTER_PORT");

  RunOptions ro{run / "nan", false, {}};
  ro.after_backward = [](int step, std::span<float> g) {
    if (step == 2) g[0] = NAN;
  };
  const RunSummary s = train(run_config(data, "cuda", {"train.max_steps=6"}), ro);
  REQUIRE(s.steps_done == 6);
  const auto recs = test::run_records(run / "nan");
  CHECK(recs.at(1).at("skipped_steps").get<int>() == 0);
  CHECK(recs.at(2).at("skipped_steps").get<int>() == 1);
  CHECK(recs.back().at("skipped_steps").get<int>() == 1);
  CHECK(std::isfinite(recs.back().at("train_loss").get<double>()));
}

// Muon (CudaMuon) with the spectral projection (CudaSpectral) after every step, against the same
// run on the CPU: the loss curves agree to the backends' tolerance, the weights of every
// checkpoint keep sigma_max within the bound, the monitor's sigma_max per matrix agrees with the
// CPU's, and the checkpoint (momentum, power vectors) resumes on the other backend.
TEST_CASE("cuda trainer: muon + spectral projection agree with the cpu run; bounds hold; resume crosses backends",
          "[gpu][train][spectral]") {
  test::TempDir data("ctdata"), run("ctrun");
  test::write_markov_shards(data.str(), 64, 40000, 8000, 15);
  for (const std::string method : {"hardcap", "normalize"}) {
    CAPTURE(method);
    const std::vector<std::string> sets = {"optim.kind=muon",          "optim.muon_lr=0.02",
                                           "spectral.method=" + method, "spectral.w_max=1.5",
                                           "spectral.roles=attn,mlp",  "spectral.monitor_every=10",
                                           "spectral.monitor_filter=h.*", "spectral.warm_start=true"};
    const std::string c = run / (method + "_cpu"), g = run / (method + "_cuda");
    train_both_and_compare(data, sets, c, g, 0.3);
    const auto lc = test::run_losses(c), lg = test::run_losses(g);

    // The GPU run's final weights: every constrained matrix within w_max (normalize: up to the
    // power iteration's under-estimate, 1e-2 as in the CPU tests).
    const Config cfg = run_config(data, "cuda", sets);
    const ParamTable table = with_constraints(cfg, build_gpt_params(cfg));
    std::vector<float> w(size_t(table.total()));
    const auto latest = io::find_latest_checkpoint(g);
    REQUIRE(latest);
    load_model_weights(*latest, table, w);
    int n_constrained = 0;
    for (const auto& p : table.entries()) {
      if (!p.constrained) continue;
      ++n_constrained;
      const double s1 = testing::singular_values(w.data() + p.offset, int(p.rows()), int(p.cols())).front();
      CAPTURE(p.name, s1);
      CHECK(s1 <= 1.5 * (method == "hardcap" ? 1.0 + 1e-3 : 1.0 + 1e-2));
    }
    CHECK(n_constrained == 12);  // 2 layers x q, k, v, o, fc, proj
    if (method == "normalize") {  // the warm-start vectors travel in the checkpoint
      const io::SafetensorsReader r(*latest + "/optimizer.safetensors");
      CHECK(r.has("h.0.mlp.fc.weight.power_u"));
    }

    // The monitor, measured on the device: the same matrices and sigma_max as the CPU's to 5e-2
    // (the weights themselves differ by the bf16 training).
    const auto mc = io::read_jsonl(c + "/spectral.jsonl"), mg = io::read_jsonl(g + "/spectral.jsonl");
    REQUIRE(mg.size() == mc.size());
    REQUIRE(!mg.empty());
    for (size_t i = 0; i < mg.size(); ++i) {
      CAPTURE(i, mc[i].dump(), mg[i].dump());
      REQUIRE(mg[i].at("name") == mc[i].at("name"));
      CHECK(rel(mg[i].at("sigma_max").get<double>(), mc[i].at("sigma_max").get<double>()) < 5e-2);
    }

    // cuda -> cpu and cpu -> cuda from step 10: momentum and power vectors cross.
    cut_run(g, g + "_c", 10);
    train(run_config(data, "cpu", sets), {g + "_c", true, {}});
    cut_run(c, c + "_g", 10);
    train(run_config(data, "cuda", sets), {c + "_g", true, {}});
    const auto lgc = test::run_losses(g + "_c"), lcg = test::run_losses(c + "_g");
    REQUIRE(lgc.size() == 20);
    REQUIRE(lcg.size() == 20);
    for (size_t i = 10; i < 20; ++i) {
      CAPTURE(i, lg[i], lgc[i], lc[i], lcg[i]);
      CHECK(rel(lgc[i], lg[i]) < kTolBackends);
      CHECK(rel(lcg[i], lc[i]) < kTolBackends);
    }
  }
}

// MoE blocks (CudaMoe) through the trainer against the CPU run: the loss curves agree, the routing
// stats reach metrics.jsonl, and with balance = bias the selection biases move on the device as
// on the CPU.
TEST_CASE("cuda trainer: moe agrees with the cpu run; expert load logged; bias balance moves the biases",
          "[gpu][train][moe]") {
  test::TempDir data("ctdata"), run("ctrun");
  test::write_markov_shards(data.str(), 64, 40000, 8000, 16);
  for (const std::string balance : {"aux", "bias"}) {
    CAPTURE(balance);
    const std::vector<std::string> sets = {"model.variant=moe",      "moe.n_expert=8",       "moe.top_k=2",
                                           "moe.d_ff_expert=64",     "moe.capacity_factor=1.25",
                                           "moe.aux_loss_coef=0.01", "moe.z_loss_coef=0.001",
                                           "moe.balance=" + balance};
    const std::string c = run / (balance + "_cpu"), g = run / (balance + "_cuda");
    train_both_and_compare(data, sets, c, g, 0.3);
    const auto rg = test::run_records(g);
    REQUIRE(rg.back().contains("expert_load"));
    CHECK(rg.back().at("expert_load").size() == 2);  // one list per MoE block
    CHECK(rg.back().at("expert_load").at(0).size() == 8);
    CHECK(rg.back().at("moe_aux_loss").get<double>() > 0.5);  // E·Σ f·P is 1 when uniform
    if (balance == "bias") {  // the biases moved: some are no longer zero, on both backends alike
      const Config cfg = run_config(data, "cuda", sets);
      const ParamTable table = build_gpt_params(cfg);
      std::vector<float> wg(size_t(table.total())), wc(size_t(table.total()));
      load_model_weights(*io::find_latest_checkpoint(g), table, wg);
      load_model_weights(*io::find_latest_checkpoint(c), table, wc);
      const ParamInfo& b = table.get("h.0.moe.router.score_bias");
      double moved_g = 0.0, moved_c = 0.0;
      for (int64_t e = 0; e < b.numel; ++e) {
        moved_g += std::abs(wg[size_t(b.offset + e)]);
        moved_c += std::abs(wc[size_t(b.offset + e)]);
      }
      CAPTURE(moved_g, moved_c);
      CHECK(moved_g > 0.0);
      CHECK(moved_c > 0.0);
    }
  }
}

// The Lipschitz variant (no norms, convex residuals, GELU / 1.129, attention / 3 at 1/d_head,
// max-norm embeddings) with the hard cap after every step, against the same run on the CPU: the
// loss curves agree to kTolBackends; the certificate at each eval step (the GPU measures its
// sigmas on the device, CudaSpectral::certificate) agrees with the CPU run's to 2e-2 in log10
// (its sigmas come from weights that differ by the bf16 training), its w_max form exactly; on
// the GPU run's own final weights the device certificate matches the host computation to 2e-3 in
// log10 (the same 60 power iterations from different start vectors); the embedding rows end
// within RMS 1 and the capped matrices within w_max.
TEST_CASE("cuda trainer: lipschitz variant with hardcap agrees with the cpu run, certificate included",
          "[gpu][train][spectral]") {
  test::TempDir data("ctdata"), run("ctrun");
  test::write_markov_shards(data.str(), 64, 40000, 8000, 16);
  const std::vector<std::string> sets = {"model.variant=lipschitz", "model.norm=none",  "model.bias=false",
                                         "model.tie_embeddings=false", "model.pos=rope",  "spectral.method=hardcap",
                                         "spectral.w_max=1.0",         "spectral.w_max_head=16",
                                         "spectral.roles=attn,mlp,head", "optim.lr=5e-3"};
  const std::string c = run / "cpu", g = run / "cuda";
  train_both_and_compare(data, sets, c, g, 0.3);  // it learned (the CPU run: 4.16 -> 3.43)

  // The certificate at the eval steps (10, 20) only, on both backends.
  const auto rc = test::run_records(c), rg = test::run_records(g);
  REQUIRE(rc.size() == 20);
  REQUIRE(rg.size() == 20);
  int n_cert = 0;
  for (size_t i = 0; i < 20; ++i) {
    CAPTURE(i);
    const bool eval_step = (i + 1) % 10 == 0;
    REQUIRE(rg[i].contains("log10_lipschitz_bound") == eval_step);
    REQUIRE(rc[i].contains("log10_lipschitz_bound") == eval_step);
    if (!eval_step) continue;
    ++n_cert;
    const double bc = rc[i].at("log10_lipschitz_bound").get<double>();
    const double bg = rg[i].at("log10_lipschitz_bound").get<double>();
    CAPTURE(bc, bg);
    CHECK(std::isfinite(bg));
    CHECK(std::abs(bg - bc) < 2e-2);
    REQUIRE(rg[i].contains("log10_lipschitz_bound_wmax"));
    CHECK(rg[i].at("log10_lipschitz_bound_wmax").get<double>() ==
          Approx(rc[i].at("log10_lipschitz_bound_wmax").get<double>()).epsilon(1e-12));
    // Measured within the guarantee, up to the hard cap's accuracy (1e-3 per matrix, 13 matrices).
    CHECK(bg <= rg[i].at("log10_lipschitz_bound_wmax").get<double>() + 1e-2);
  }
  CHECK(n_cert == 2);

  // The GPU run's final weights (step 20, the weights of its last eval): the host certificate,
  // the embedding max-norm and the caps.
  const Config cfg = run_config(data, "cuda", sets);
  const ParamTable table = with_constraints(cfg, build_gpt_params(cfg));
  std::vector<float> w(size_t(table.total()));
  const auto latest = io::find_latest_checkpoint(g);
  REQUIRE(latest);
  load_model_weights(*latest, table, w);
  const double host = lipschitz_certificate(cfg, table, w).log10_bound;
  const double device = rg.back().at("log10_lipschitz_bound").get<double>();
  CAPTURE(host, device);
  CHECK(std::abs(device - host) < 2e-3);
  const ParamInfo* wte = table.find("wte");
  REQUIRE(wte);
  const double max_rms = max_row_rms(w, *wte);
  CAPTURE(max_rms);
  CHECK(max_rms <= 1.0 + 1e-5);
  CHECK(max_rms > 0.5);  // rows start at RMS ~1 (the init): the check sees real rows
  int n_constrained = 0;
  for (const auto& p : table.entries()) {
    if (!p.constrained) continue;
    ++n_constrained;
    const double s1 = testing::singular_values(w.data() + p.offset, int(p.rows()), int(p.cols())).front();
    const double bound = p.name == "lm_head.weight" ? 16.0 : 1.0;
    CAPTURE(p.name, s1);
    CHECK(s1 <= bound * (1.0 + 1e-3));
  }
  CHECK(n_constrained == 13);  // 2 layers x q, k, v, o, fc, proj, and the head
}

// Without a spectral.method the lipschitz variant still max-norms its embeddings after every step
// and logs its measured certificate (no w_max form): the GPU engine builds CudaSpectral for it.
TEST_CASE("cuda trainer: lipschitz variant without a spectral method keeps the embedding max-norm",
          "[gpu][train][spectral]") {
  test::TempDir data("ctdata"), run("ctrun");
  test::write_markov_shards(data.str(), 64, 40000, 8000, 17);
  const std::vector<std::string> sets = {"model.variant=lipschitz", "model.norm=none", "model.bias=false",
                                         "model.tie_embeddings=false", "spectral.method=none", "optim.lr=1e-2"};
  const std::string c = run / "cpu", g = run / "cuda";
  train_both_and_compare(data, sets, c, g, 0.0);
  const auto rc = test::run_records(c), rg = test::run_records(g);
  REQUIRE(rg.back().contains("log10_lipschitz_bound"));
  CHECK_FALSE(rg.back().contains("log10_lipschitz_bound_wmax"));
  const double bc = rc.back().at("log10_lipschitz_bound").get<double>();
  const double bg = rg.back().at("log10_lipschitz_bound").get<double>();
  CAPTURE(bc, bg);
  CHECK(std::abs(bg - bc) < 2e-2);

  const Config cfg = run_config(data, "cuda", sets);
  const ParamTable table = with_constraints(cfg, build_gpt_params(cfg));
  std::vector<float> w(size_t(table.total()));
  const auto latest = io::find_latest_checkpoint(g);
  REQUIRE(latest);
  load_model_weights(*latest, table, w);
  for (const char* name : {"wte", "wpe"}) {  // learned positions: both are max-normed
    const ParamInfo* p = table.find(name);
    REQUIRE(p);
    const double max_rms = max_row_rms(w, *p);
    CAPTURE(name, max_rms);
    CHECK(max_rms <= 1.0 + 1e-5);
    CHECK(max_rms > 0.5);
  }
}

TEST_CASE("cuda engine: the weights read back before the first step are the projected ones", "[gpu][train][spectral]") {
  // The engine projects its initial master weights on the device; host_params() must return
  // those, not the host copy it started from (the CPU engine starts inside the constraint set too).
  test::TempDir data("ctdata");
  test::write_markov_shards(data.str(), 64, 40000, 8000, 17);
  const Config cfg = run_config(data, "cuda",
                                {"spectral.method=hardcap", "spectral.w_max=0.2", "spectral.roles=attn,mlp"});
  const RunOptions opt{"", false, {}};
  const std::unique_ptr<TrainEngine> engine = make_cuda_engine(cfg, opt);
  const ParamTable table = with_constraints(cfg, build_gpt_params(cfg));
  const std::span<const float> w = engine->host_params();
  int n_constrained = 0;
  double largest_initial = 0.0;
  std::vector<float> init(size_t(table.total()));
  init_gpt_params(cfg, table, init, cfg.train.seed);
  for (const auto& p : table.entries()) {
    if (!p.constrained) continue;
    ++n_constrained;
    const double s1 = testing::singular_values(w.data() + p.offset, int(p.rows()), int(p.cols())).front();
    const double s0 = testing::singular_values(init.data() + p.offset, int(p.rows()), int(p.cols())).front();
    largest_initial = std::max(largest_initial, s0);
    CAPTURE(p.name, s0, s1);
    CHECK(s1 <= 0.2 * (1.0 + 1e-3));
  }
  CHECK(n_constrained == 12);
  CHECK(largest_initial > 0.25);  // N(0, 0.02) init: sigma_max ~0.32-0.39, so the cap had work
}
