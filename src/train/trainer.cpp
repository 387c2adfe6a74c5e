#include "train/trainer.hpp"

#include <cblas.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <thread>

#include <spdlog/spdlog.h>

#include "backend/cpu/parallel.hpp"
#include "core/error.hpp"
#include "core/rng.hpp"
#include "data/dataloader.hpp"
#include "data/shard.hpp"
#include "data/tokenizer.hpp"
#include "dist/in_process_comm.hpp"
#include "dist/nccl_comm.hpp"
#include "dist/rendezvous.hpp"
#include "io/checkpoint_dir.hpp"
#include "io/jsonl.hpp"
#include "io/metrics_log.hpp"
#include "model/cpu_gpt.hpp"
#include "model/gpt.hpp"
#include "optim/lr_schedule.hpp"
#include "spectral/certificate.hpp"
#include "spectral/spectral_log.hpp"
#include "train/checkpoint.hpp"
#include "train/engine.hpp"
#include "train/sample.hpp"

namespace fs = std::filesystem;

namespace pg {

namespace {

std::atomic<int> g_signal{0};
extern "C" void on_signal(int sig) { g_signal.store(sig); }

struct SignalGuard {  // SIGINT/SIGTERM end the run after the current step, with a checkpoint
  void (*old_int)(int), (*old_term)(int);
  SignalGuard() {
    g_signal.store(0);
    old_int = std::signal(SIGINT, on_signal);
    old_term = std::signal(SIGTERM, on_signal);
  }
  ~SignalGuard() {
    std::signal(SIGINT, old_int);
    std::signal(SIGTERM, old_term);
  }
};

// All CPU parallelism runs on our pool (GEMMs included, split by output rows), so OpenBLAS
// itself stays single-threaded.
void set_threads(const TrainConfig& t) {
  openblas_set_num_threads(1);
  if (t.threads > 0) cpu::set_num_threads(t.threads);
}

std::string human_count(double x) {
  char buf[32];
  if (x >= 1e6) std::snprintf(buf, sizeof buf, "%.2fM", x / 1e6);
  else if (x >= 1e3) std::snprintf(buf, sizeof buf, "%.1fK", x / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", x);
  return buf;
}

std::string human_time(double s) {
  char buf[32];
  const int t = int(s + 0.5);
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%dh%02dm", t / 3600, (t / 60) % 60);
  else std::snprintf(buf, sizeof buf, "%dm%02ds", t / 60, t % 60);
  return buf;
}

// Evaluates max_batches batches (or the whole split) of the val stream, of which this rank reads
// its slice of world_size * B windows per batch (the val loader is sliced like the train one).
template <typename EvalFn>
EvalResult run_eval(EvalFn&& eval_batch, DataLoader& val, int B, int T, int max_batches, int world_size = 1) {
  val.reset();
  const int64_t per_batch = int64_t(B) * T;
  int n = int(val.n_windows() / (int64_t(B) * world_size));
  if (max_batches > 0) n = std::min(n, max_batches);
  if (n == 0) throw UserError("data.val: the val split holds fewer than batch_size windows of seq_len+1 tokens");
  std::vector<int32_t> x(static_cast<size_t>(per_batch)), y(static_cast<size_t>(per_batch));
  double loss = 0;
  int64_t correct = 0;
  for (int i = 0; i < n; ++i) {
    val.next_batch(x, y);
    int64_t c = 0;
    loss += eval_batch(x, y, &c);
    correct += c;
  }
  return {loss / n, double(correct) / double(per_batch * n), per_batch * n};
}

// run_eval on every rank, the totals summed over ranks: with equal batches per rank, the same
// loss and accuracy as one rank evaluating the global batches.
EvalResult run_eval_global(TrainEngine& engine, DataLoader& val, int B, int T, int max_batches) {
  const EvalResult ev = run_eval(
      [&](std::span<const int32_t> x, std::span<const int32_t> y, int64_t* c) { return engine.eval_batch(x, y, c); },
      val, B, T, max_batches, engine.world_size());
  if (engine.world_size() == 1) return ev;
  std::array<double, 3> sums = {ev.loss * double(ev.tokens), ev.acc * double(ev.tokens), double(ev.tokens)};
  engine.sum(sums);
  return {sums[0] / sums[2], sums[1] / sums[2], int64_t(sums[2])};
}

// train.device -> "cpu" or "cuda". auto takes the GPU when this build and machine have one and the
// CUDA trainer supports the config, else the CPU; an explicit cuda that cannot run is an error.
std::string resolve_device(const Config& cfg, int world_size) {
  const std::string& d = cfg.train.device;
  if (d == "cpu") return "cpu";
  std::string why;
  const bool available = cuda_trainer_available(&why);
  if (d == "cuda") {
    if (!available) throw UserError("train.device = cuda (--device cuda): " + why + "; use --device cpu");
    const std::string unsupported = cuda_trainer_unsupported(cfg, world_size);
    if (!unsupported.empty()) throw UserError(unsupported);
    return "cuda";
  }
  if (!available) return "cpu";
  const std::string unsupported = cuda_trainer_unsupported(cfg, world_size);
  if (unsupported.empty()) return "cuda";
  spdlog::info("train.device = auto: training on the cpu ({})", unsupported);
  return "cpu";
}

}  // namespace

RunSummary train(const Config& cfg, const RunOptions& opt) {
  const dist::DistEnv env = dist::dist_env_from_environment();
  const std::string device = resolve_device(cfg, env.world_size);
  if (env.world_size > 1 && device != "cuda") {  // an explicit --device cuda was refused by resolve_device already
    const std::string no_cuda = cuda_trainer_unsupported(cfg, env.world_size);
    throw UserError("WORLD_SIZE=" + std::to_string(env.world_size) +
                    ": multi-process training runs over NCCL on --device cuda, one GPU per rank" +
                    (cfg.train.device == "auto" && !no_cuda.empty() ? " (not this config: " + no_cuda + ")" : "") +
                    "; on the CPU run ranks as threads with --set dist.cpu_ranks=N");
  }
  set_threads(cfg.train);  // sampling runs on the CPU on either device
  SignalGuard signals;
#ifdef POLARGPT_WITH_CUDA
  if (device == "cuda") {
    prepare_run_dir(opt);
#ifdef POLARGPT_WITH_NCCL
    // Started by scripts/launch.sh (or torchrun, Slurm): one rank of a data-parallel run over
    // NCCL, on GPU LOCAL_RANK, even at WORLD_SIZE=1.
    if (std::getenv("WORLD_SIZE") != nullptr) {
      dist::NcclComm comm(env, cfg.dist.timeout_s);  // selects the device before the engine allocates
      const std::unique_ptr<TrainEngine> engine = make_cuda_engine(cfg, opt, {&comm, comm.stream()});
      return run_training(cfg, opt, *engine);
    }
#endif
    const std::unique_ptr<TrainEngine> engine = make_cuda_engine(cfg, opt);
    return run_training(cfg, opt, *engine);
  }
#endif
  RunSummary out;
  dist::run_ranks(cfg.dist.cpu_ranks, cfg.dist.timeout_s, [&](dist::Comm& comm) {
    const RunSummary s = train_rank(cfg, opt, comm);
    if (comm.rank() == 0) out = s;
  });
  return out;
}

RunSummary train_rank(const Config& cfg, const RunOptions& opt, dist::Comm& comm) {
  prepare_run_dir(opt);
  const std::unique_ptr<TrainEngine> engine = make_cpu_engine(cfg, opt, comm);
  return run_training(cfg, opt, *engine);
}

void prepare_run_dir(const RunOptions& opt) {
  std::error_code ec;
  fs::create_directories(opt.run_dir, ec);
  if (ec) throw UserError("--out " + opt.run_dir + ": cannot create directory (" + ec.message() + ")");
}

RunSummary run_training(const Config& cfg, const RunOptions& opt, TrainEngine& engine) {
  const auto& m = cfg.model;
  const int B = cfg.train.batch_size, T = m.seq_len, A = cfg.train.grad_accum;
  const int W = engine.world_size(), rank = engine.rank();
  const bool lead = rank == 0;  // logs, evaluates the totals, samples and writes files
  const ParamTable& table = engine.table();

  // Data: rank r reads its slice of every global batch of W*B windows.
  DataLoader train_data({expand_shards(cfg.data.train, "data.train"), B, T, cfg.data.sampling == "random",
                         cfg.train.seed, rank, W});
  DataLoader val_data({expand_shards(cfg.data.val, "data.val"), B, T, false, cfg.train.seed, rank, W});

  // State that a checkpoint carries.
  int start_step = 0;
  int64_t updates = 0, skipped_total = 0;
  int skipped_in_row = 0;
  double elapsed_before = 0.0;
  Rng rng(cfg.train.seed ^ 0x5A4D504C45ull);

  const std::string metrics_path = opt.run_dir + "/metrics.jsonl";
  if (opt.resume) {
    const auto latest = io::find_latest_checkpoint(opt.run_dir);
    if (!latest) throw UserError("--resume " + opt.run_dir + ": no checkpoint found in " + opt.run_dir + "/checkpoints");
    const nlohmann::json st = load_state_json(*latest);
    engine.load_checkpoint(*latest);
    try {
      start_step = st.at("step").get<int>();
      updates = st.at("updates").get<int64_t>();
      skipped_total = st.at("skipped_total").get<int64_t>();
      skipped_in_row = st.at("skipped_in_row").get<int>();
      elapsed_before = st.at("elapsed_s").get<double>();
      std::array<uint64_t, 4> s{};
      for (int i = 0; i < 4; ++i) s[size_t(i)] = std::stoull(st.at("rng").at(size_t(i)).get<std::string>());
      rng.set_state(s);
      train_data.set_state(st.at("data"));
    } catch (const nlohmann::json::exception& e) {
      throw UserError(*latest + "/state.json: missing or malformed field (" + std::string(e.what()) + ")");
    }
    if (lead && fs::exists(metrics_path)) io::truncate_jsonl_after_step(metrics_path, start_step);
    if (lead && fs::exists(opt.run_dir + "/spectral.jsonl"))
      io::truncate_jsonl_after_step(opt.run_dir + "/spectral.jsonl", start_step);
    if (lead) spdlog::info("resuming {} from step {} on {} rank(s)", *latest, start_step, W);
  } else if (io::find_latest_checkpoint(opt.run_dir)) {
    throw UserError("--out " + opt.run_dir + ": already holds a run with checkpoints; pass --resume " + opt.run_dir +
                    " to continue it, or choose another --out");
  }
  engine.start();
  // MFU = achieved FLOP/s / peak: train.peak_tflops, or the GPU's known peak; none when neither.
  const double peak_tflops = cfg.train.peak_tflops > 0 ? cfg.train.peak_tflops : engine.detected_peak_tflops();
  const double flops_token = flops_per_token(cfg, table);
  std::optional<io::MetricsLog> metrics;
  if (lead) {
    std::ofstream f(opt.run_dir + "/config.json");
    f << to_json(cfg).dump(2) << "\n";
    metrics.emplace(opt.run_dir, "metrics", /*append=*/opt.resume, cfg.train.tensorboard);
    spdlog::info("model: {} parameters ({} layers, d_model {}, {} heads, vocab {})", table.n_params(), m.n_layer,
                 m.d_model, m.n_head, m.vocab_size);
    for (const auto& line : engine.describe()) spdlog::info("{}", line);
    spdlog::info("data: train {} tokens, val {} tokens; {} tokens per step ({} rank(s) x {} x {} x {})",
                 train_data.n_tokens(), val_data.n_tokens(), int64_t(B) * T * A * W, W, A, B, T);
    if (peak_tflops > 0)
      spdlog::info("mfu: {:.3g} GFLOP per token (6 N + 12 L T C) against a peak of {:g} TFLOP/s", flops_token / 1e9,
                   peak_tflops);
  }
  // spectral.jsonl, and with TensorBoard on its sigma_max scalars per matrix (sigma_max/<name>).
  std::optional<io::MetricsLog> spectral_log;
  if (lead && cfg.spectral.monitor_every > 0)
    spectral_log.emplace(opt.run_dir, "spectral", /*append=*/opt.resume, cfg.train.tensorboard);

  auto save = [&](int step) {
    nlohmann::json st = {{"step", step},
                         {"updates", updates},
                         {"skipped_total", skipped_total},
                         {"skipped_in_row", skipped_in_row},
                         {"elapsed_s", elapsed_before},
                         {"data", train_data.state()},
                         {"config", to_json(cfg)}};
    nlohmann::json r = nlohmann::json::array();
    for (uint64_t w : rng.state()) r.push_back(std::to_string(w));
    st["rng"] = r;
    st["world_size"] = W;
    const CheckpointTensors c = engine.checkpoint_tensors();  // a collective: every rank takes part
    if (lead) save_checkpoint(opt.run_dir, step, table, c.params, c.optimizer, st, c.extra);
  };

  RunSummary summary;
  std::vector<int32_t> x(size_t(B) * T), y(size_t(B) * T);
  const double tokens_per_step = double(B) * T * A * W;
  auto t_start = std::chrono::steady_clock::now();
  auto t_log = t_start;
  int steps_since_log = 0;
  const int max_steps = cfg.train.max_steps;

  for (int step = start_step; step < max_steps; ++step) {
    engine.begin_step();
    double loss = 0.0;
    for (int a = 0; a < A; ++a) {
      train_data.next_batch(x, y);
      loss += engine.micro_step(x, y, 1.0 / A) / A;
    }
    const double gnorm = engine.reduce_grads(step);
    // The global loss (mean of the ranks' means over equal token counts) and whether any rank
    // was signalled: every rank takes the same decisions below.
    std::array<double, 2> shared = {loss / W, g_signal.load() != 0 ? 1.0 : 0.0};
    engine.sum(shared);
    loss = shared[0];
    const double lr = learning_rate(cfg.optim, step, max_steps);
    const bool finite = std::isfinite(loss) && std::isfinite(gnorm);
    if (finite) {
      skipped_in_row = 0;
      const float clip = cfg.optim.grad_clip > 0 && gnorm > cfg.optim.grad_clip ? float(cfg.optim.grad_clip / gnorm) : 1.0f;
      ++updates;
      engine.update(clip, lr_factor(cfg.optim, step, max_steps), lr, updates, step);
    } else {
      ++skipped_total;
      ++skipped_in_row;
      if (lead) spdlog::warn("step {}: non-finite loss {} or grad norm {}; update skipped ({} in a row)", step + 1, loss, gnorm,
                   skipped_in_row);
      if (skipped_in_row >= cfg.train.max_skipped)
        throw UserError("train.max_skipped: " + std::to_string(skipped_in_row) +
                        " non-finite steps in a row at step " + std::to_string(step + 1) +
                        "; stopping (the last good checkpoint is kept in " + opt.run_dir + "/checkpoints)");
    }
    const int done = step + 1;
    ++steps_since_log;
    summary.steps_done = done;
    summary.final_train_loss = loss;
    if (spectral_log && done % cfg.spectral.monitor_every == 0)  // inside the timed step
      for (const auto& line : engine.spectral_monitor(done)) spectral_log->write(line);

    const bool last = done == max_steps;
    const bool stop = shared[1] > 0;
    const bool do_eval = last || (cfg.train.eval_every > 0 && done % cfg.train.eval_every == 0);
    const bool do_log = last || stop || do_eval || done % cfg.train.log_every == 0;
    if (do_log) {
      const auto now = std::chrono::steady_clock::now();
      EvalResult ev;
      if (do_eval) ev = run_eval_global(engine, val_data, B, T, cfg.train.eval_batches);
      if (lead) {
        const double dt = std::chrono::duration<double>(now - t_log).count();
        const double elapsed = elapsed_before + std::chrono::duration<double>(now - t_start).count();
        const double tps = dt > 0 ? steps_since_log * tokens_per_step / dt : 0.0;
        nlohmann::json rec = {{"step", done},      {"train_loss", loss},         {"lr", lr},
                              {"grad_norm", gnorm}, {"tokens_per_s", tps},        {"elapsed_s", elapsed},
                              {"skipped_steps", skipped_total}};
        std::string mfumsg;
        if (peak_tflops > 0) {
          const double mfu = tps * flops_token / (peak_tflops * 1e12);
          rec["mfu"] = mfu;
          mfumsg = fmt::format(" | MFU {:.1f}%", 100.0 * mfu);
        }
        engine.moe_step().write(rec);  // rank 0's routing stats
        std::string evalmsg;
        if (do_eval) {
          rec["val_loss"] = ev.loss;
          rec["val_acc"] = ev.acc;
          summary.final_val_loss = ev.loss;
          summary.final_val_acc = ev.acc;
          evalmsg = fmt::format(" | val {:.4f} acc {:.3f}", ev.loss, ev.acc);
          if (m.variant == "lipschitz") {
            const std::optional<nlohmann::json> on_device = engine.device_certificate();
            const nlohmann::json cert =
                on_device ? *on_device : lipschitz_certificate(cfg, table, engine.host_params()).to_json();
            rec.update(cert);
            evalmsg += fmt::format(" | log10 L {:.3f}", cert.at("log10_lipschitz_bound").get<double>());
          }
        }
        if (!finite) rec["train_loss"] = nullptr;
        metrics->write(rec);
        const double eta = tps > 0 ? (max_steps - done) * tokens_per_step / tps : 0.0;
        spdlog::info("step {:>{}}/{} | loss {:.4f} | lr {:.2e} | norm {:.3f} | {} tok/s{} | ETA {}{}", done,
                     int(std::to_string(max_steps).size()), max_steps, loss, lr, gnorm, human_count(tps), mfumsg,
                     human_time(eta), evalmsg);
      }
      t_log = std::chrono::steady_clock::now();  // eval time is not training throughput
      steps_since_log = 0;
    }
    if (lead && cfg.train.sample_every > 0 && done % cfg.train.sample_every == 0) {
      const Gpt2Tokenizer tok = Gpt2Tokenizer::load(cfg.data.tokenizer);
      SampleOptions so;
      so.max_tokens = cfg.train.sample_tokens;
      CpuGpt<float> sampler(cfg, table, 1);
      const std::span<const float> p = engine.host_params();
      const auto ids = sample_tokens(sampler, std::vector<float>(p.begin(), p.end()), {tok.eot()}, T, m.vocab_size, so, rng);
      spdlog::info("sample: {}", tok.decode(ids));
    }
    if (last || stop || (cfg.train.checkpoint_every > 0 && done % cfg.train.checkpoint_every == 0)) {
      elapsed_before += std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
      t_start = std::chrono::steady_clock::now();
      save(done);
    }
    if (stop && !last) {
      if (lead) spdlog::warn("signal {} received: checkpoint saved at step {}; resume with --resume {}", g_signal.load(), done,
                   opt.run_dir);
      summary.interrupted = true;
      break;
    }
  }
  return summary;
}

EvalResult evaluate_checkpoint(const std::string& ckpt_dir, int max_batches) {
  const nlohmann::json st = load_state_json(ckpt_dir);
  const Config cfg = from_json(st.at("config"), ckpt_dir + "/state.json");
  set_threads(cfg.train);
  const ParamTable table = build_gpt_params(cfg);
  std::vector<float> params(size_t(table.total()), 0.0f);
  load_model_weights(ckpt_dir, table, params);
  const int B = cfg.train.batch_size, T = cfg.model.seq_len;
  CpuGpt<float> model(cfg, table, B);
  DataLoader val({expand_shards(cfg.data.val, "data.val"), B, T, false, cfg.train.seed, 0, 1});
  return run_eval([&](std::span<const int32_t> x, std::span<const int32_t> y,
                      int64_t* c) { return model.forward(params.data(), x.data(), y.data(), B, T, c); },
                  val, B, T, max_batches);
}

}  // namespace pg
