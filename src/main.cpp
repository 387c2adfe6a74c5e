// polargpt command line: a thin shell over the library. Each subcommand parses its flags with
// cxxopts and calls one library entry point. Exit codes: 0 ok, 2 bad input (one-line error
// naming the flag, file or key), 1 internal error.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

// --set values are whole strings: a comma belongs to the value (spectral.roles=attn,mlp), it does
// not separate several of them (cxxopts splits vector options on ',' by default).
#define CXXOPTS_VECTOR_DELIMITER '\0'
#include <cxxopts.hpp>
#include <spdlog/spdlog.h>

#include "config/config.hpp"
#include "core/error.hpp"
#include "core/rng.hpp"
#include "core/version.hpp"
#include "data/prepare.hpp"
#include "data/tokenizer.hpp"
#include "io/checkpoint_dir.hpp"
#include "model/cpu_gpt.hpp"
#include "model/gpt.hpp"
#include "sweep/runner.hpp"
#include "sweep/sweep_spec.hpp"
#include "train/checkpoint.hpp"
#include "train/inspect.hpp"
#include "train/interchange.hpp"
#include "train/sample.hpp"
#include "train/trainer.hpp"

namespace fs = std::filesystem;
using namespace pg;

namespace {

const char* kUsage =
    "usage: polargpt <command> [flags]\n"
    "  train     --config FILE [--set key.path=value]... [--out RUN_DIR] [--resume RUN_DIR] [--device cpu|cuda]\n"
    "  eval      --ckpt CKPT_DIR [--batches N]\n"
    "  sample    --ckpt CKPT_DIR --prompt TEXT [--max-tokens N] [--temperature T] [--top-k K] [--seed S]\n"
    "  import    --llmc FILE.bin --out CKPT_DIR [--config FILE] [--set ...]   (an llm.c GPT-2 model file)\n"
    "  export    --ckpt CKPT_DIR --format hf|llmc --out DIR|FILE.bin [--dtype fp32|bf16]\n"
    "  prepare   --input FILES... --out DIR [--val-fraction F] [--name NAME] [--tokenizer DIR]\n"
    "  tokenize  [--tokenizer DIR]   (text on stdin -> GPT-2 token ids on stdout)\n"
    "  config    [--config FILE] [--set ...] [--describe]   (print the resolved config, or the reference table)\n"
    "  inspect   --ckpt CKPT_DIR [--json]   (per-matrix sigma_max, w_max, and the Lipschitz certificate)\n"
    "  sweep     SWEEP.json [--out DIR] [--gpus LIST] [--dry-run] [--retry-failed]\n"
    "run `polargpt <command> --help` for a command's flags\n";

cxxopts::ParseResult parse(cxxopts::Options& o, int argc, char** argv) {
  o.add_options()("h,help", "show this help");
  auto r = o.parse(argc, argv);
  if (r.count("help")) {
    std::cout << o.help() << "\n";
    std::exit(0);
  }
  if (!r.unmatched().empty()) throw UserError(std::string(argv[0]) + ": unexpected argument '" + r.unmatched()[0] + "'");
  return r;
}

std::string need(const cxxopts::ParseResult& r, const std::string& flag) {
  if (!r.count(flag)) throw UserError("--" + flag + ": required");
  return r[flag].as<std::string>();
}

// A checkpoint flag may name a checkpoint directory or a run directory (then its latest).
std::string resolve_ckpt(const std::string& path) {
  if (fs::exists(path + "/state.json")) return path;
  if (fs::exists(path + "/checkpoints")) {
    if (auto latest = io::find_latest_checkpoint(path)) return *latest;
  }
  throw UserError("--ckpt " + path + ": not a checkpoint directory (no state.json) nor a run directory with checkpoints");
}

std::string default_run_dir(const std::string& config_path) {
  const std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
  return "runs/" + fs::path(config_path).stem().string() + "-" + stamp;
}

int cmd_train(int argc, char** argv) {
  cxxopts::Options o("polargpt train", "train a model");
  o.add_options()("config", "config file (JSON)", cxxopts::value<std::string>())(
      "set", "override a config field: key.path=value (repeatable)", cxxopts::value<std::vector<std::string>>())(
      "out", "run directory (default runs/<config>-<time>)", cxxopts::value<std::string>())(
      "resume", "continue the run in RUN_DIR from its latest checkpoint", cxxopts::value<std::string>())(
      "device", std::string("cpu | cuda | auto (overrides train.device; this build trains on: ") + train_devices() + ")",
      cxxopts::value<std::string>());
  auto r = parse(o, argc, argv);
  std::vector<std::string> sets = r.count("set") ? r["set"].as<std::vector<std::string>>() : std::vector<std::string>{};
  if (r.count("device")) {
    const std::string d = r["device"].as<std::string>();
    if (d != "cpu" && d != "cuda" && d != "auto") throw UserError("--device: expected cpu or cuda, got '" + d + "'");
    sets.push_back("train.device=" + d);
  }
  RunOptions ro;
  std::string config_path;
  if (r.count("resume")) {
    ro.resume = true;
    ro.run_dir = r["resume"].as<std::string>();
    if (r.count("out") && r["out"].as<std::string>() != ro.run_dir)
      throw UserError("--out: cannot differ from --resume (a resumed run continues in its own directory)");
    config_path = r.count("config") ? r["config"].as<std::string>() : ro.run_dir + "/config.json";
  } else {
    config_path = need(r, "config");
    ro.run_dir = r.count("out") ? r["out"].as<std::string>() : default_run_dir(config_path);
  }
  const Config cfg = load_config(config_path, sets);
  spdlog::info("polargpt {}: run directory {}", version(), ro.run_dir);
  const RunSummary s = train(cfg, ro);
  spdlog::info("done: {} steps, train loss {:.4f}, val loss {:.4f}, val acc {:.3f}{}", s.steps_done,
               s.final_train_loss, s.final_val_loss, s.final_val_acc, s.interrupted ? " (interrupted)" : "");
  return 0;
}

int cmd_eval(int argc, char** argv) {
  cxxopts::Options o("polargpt eval", "evaluate a checkpoint on its val split");
  o.add_options()("ckpt", "checkpoint (or run) directory", cxxopts::value<std::string>())(
      "batches", "batches to evaluate (0 = the whole val split)", cxxopts::value<int>()->default_value("0"));
  auto r = parse(o, argc, argv);
  const std::string ckpt = resolve_ckpt(need(r, "ckpt"));
  const int batches = r["batches"].as<int>();
  if (batches < 0) throw UserError("--batches: expected >= 0");
  const EvalResult e = evaluate_checkpoint(ckpt, batches);
  std::printf("{\"ckpt\": \"%s\", \"val_loss\": %.6f, \"val_acc\": %.6f, \"tokens\": %lld}\n", ckpt.c_str(), e.loss,
              e.acc, (long long)e.tokens);
  return 0;
}

int cmd_sample(int argc, char** argv) {
  cxxopts::Options o("polargpt sample", "generate text from a checkpoint");
  o.add_options()("ckpt", "checkpoint (or run) directory", cxxopts::value<std::string>())(
      "prompt", "text to continue", cxxopts::value<std::string>()->default_value(""))(
      "max-tokens", "tokens to generate", cxxopts::value<int>()->default_value("64"))(
      "temperature", "softmax temperature (0 = greedy)", cxxopts::value<double>()->default_value("0.8"))(
      "top-k", "sample among the k most likely (0 = all)", cxxopts::value<int>()->default_value("40"))(
      "seed", "random seed", cxxopts::value<uint64_t>()->default_value("1"));
  auto r = parse(o, argc, argv);
  const std::string ckpt = resolve_ckpt(need(r, "ckpt"));
  SampleOptions so;
  so.max_tokens = r["max-tokens"].as<int>();
  so.temperature = r["temperature"].as<double>();
  so.top_k = r["top-k"].as<int>();
  if (so.max_tokens < 1) throw UserError("--max-tokens: expected >= 1");
  if (so.temperature < 0) throw UserError("--temperature: expected >= 0");
  if (so.top_k < 0) throw UserError("--top-k: expected >= 0");
  const nlohmann::json st = load_state_json(ckpt);
  const Config cfg = from_json(st.at("config"), ckpt + "/state.json");
  const ParamTable table = build_gpt_params(cfg);
  std::vector<float> params(size_t(table.total()), 0.0f);
  load_model_weights(ckpt, table, params);
  const Gpt2Tokenizer tok = Gpt2Tokenizer::load(cfg.data.tokenizer);
  std::vector<int> ctx = tok.encode(r["prompt"].as<std::string>());
  ctx.insert(ctx.begin(), tok.eot());
  so.stop_token = tok.eot();
  CpuGpt<float> model(cfg, table, 1);
  Rng rng(r["seed"].as<uint64_t>());
  const auto ids = sample_tokens(model, params, ctx, cfg.model.seq_len, cfg.model.vocab_size, so, rng);
  std::cout << r["prompt"].as<std::string>() << tok.decode(ids) << "\n";
  return 0;
}

int cmd_import(int argc, char** argv) {
  cxxopts::Options o("polargpt import", "make a checkpoint directory from an llm.c GPT-2 model file");
  o.add_options()("llmc", "llm.c model file (magic 20240326, version 3 fp32 or 5 bf16)", cxxopts::value<std::string>())(
      "out", "checkpoint directory to create", cxxopts::value<std::string>())(
      "config", "config file for everything but the model section (data, train...)", cxxopts::value<std::string>())(
      "set", "override a non-model config field: key.path=value (repeatable)",
      cxxopts::value<std::vector<std::string>>());
  auto r = parse(o, argc, argv);
  const std::string file = need(r, "llmc"), out = need(r, "out");
  const auto sets = r.count("set") ? r["set"].as<std::vector<std::string>>() : std::vector<std::string>{};
  for (const auto& s : sets)
    if (s.rfind("model.", 0) == 0)
      throw UserError("--set " + s + ": the model section comes from the llm.c header and cannot be overridden");
  const Config base = r.count("config") ? load_config(r["config"].as<std::string>(), sets) : default_config(sets);
  import_llmc(file, out, base);
  return 0;
}

int cmd_export(int argc, char** argv) {
  cxxopts::Options o("polargpt export", "write a checkpoint's model in another layout");
  o.add_options()("ckpt", "checkpoint (or run) directory", cxxopts::value<std::string>())(
      "format", "hf (a transformers GPT2LMHeadModel directory) | llmc (an llm.c model file)",
      cxxopts::value<std::string>())("out", "output directory (hf) or file (llmc)", cxxopts::value<std::string>())(
      "dtype", "llmc only: fp32 (version 3) | bf16 (version 5)", cxxopts::value<std::string>()->default_value("fp32"));
  auto r = parse(o, argc, argv);
  const std::string ckpt = resolve_ckpt(need(r, "ckpt")), format = need(r, "format"), out = need(r, "out");
  const std::string dtype = r["dtype"].as<std::string>();
  if (dtype != "fp32" && dtype != "bf16") throw UserError("--dtype: expected fp32 or bf16, got '" + dtype + "'");
  if (format == "hf") {
    if (r.count("dtype")) throw UserError("--dtype: only for --format llmc (the hf export is fp32)");
    export_hf(ckpt, out);
  } else if (format == "llmc") {
    export_llmc(ckpt, out, dtype == "bf16");
  } else {
    throw UserError("--format: expected hf or llmc, got '" + format + "'");
  }
  return 0;
}

int cmd_prepare(int argc, char** argv) {
  cxxopts::Options o("polargpt prepare", "tokenize text files into llm.c-format token shards");
  o.add_options()("input", "text files", cxxopts::value<std::vector<std::string>>())(
      "out", "output directory", cxxopts::value<std::string>())(
      "val-fraction", "share of tokens for the val split", cxxopts::value<double>()->default_value("0.05"))(
      "name", "shard name prefix (default: the output directory's name)", cxxopts::value<std::string>())(
      "tokenizer", "directory with encoder.json and vocab.bpe",
      cxxopts::value<std::string>()->default_value("data/tokenizer"));
  o.parse_positional({"input"});
  auto r = parse(o, argc, argv);
  if (!r.count("input")) throw UserError("--input: required (one or more text files)");
  const std::string out = need(r, "out");
  const double vf = r["val-fraction"].as<double>();
  if (!(vf >= 0.0 && vf < 1.0)) throw UserError("--val-fraction: expected a number in [0, 1)");
  const std::string name = r.count("name") ? r["name"].as<std::string>() : fs::path(out).filename().string();
  const Gpt2Tokenizer tok = Gpt2Tokenizer::load(r["tokenizer"].as<std::string>());
  const PrepareResult res = prepare_corpus(r["input"].as<std::vector<std::string>>(), out, vf, tok, name);
  spdlog::info("prepared {} train and {} val tokens into {}", res.train_tokens, res.val_tokens, out);
  for (const auto& f : res.files) std::cout << f << "\n";
  return 0;
}

int cmd_tokenize(int argc, char** argv) {
  cxxopts::Options o("polargpt tokenize", "text on stdin -> GPT-2 token ids");
  o.add_options()("tokenizer", "directory with encoder.json and vocab.bpe",
                  cxxopts::value<std::string>()->default_value("data/tokenizer"));
  auto r = parse(o, argc, argv);
  const Gpt2Tokenizer tok = Gpt2Tokenizer::load(r["tokenizer"].as<std::string>());
  const std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  std::cout << tokenize_to_string(tok, text) << "\n";
  return 0;
}

int cmd_config(int argc, char** argv) {
  cxxopts::Options o("polargpt config", "print the resolved config or the config reference");
  o.add_options()("config", "config file", cxxopts::value<std::string>())(
      "set", "override key.path=value", cxxopts::value<std::vector<std::string>>())(
      "describe", "print the reference table (Markdown)");
  auto r = parse(o, argc, argv);
  if (r.count("describe")) {
    std::cout << describe_markdown();
    return 0;
  }
  const auto sets = r.count("set") ? r["set"].as<std::vector<std::string>>() : std::vector<std::string>{};
  const Config cfg = r.count("config") ? load_config(r["config"].as<std::string>(), sets) : default_config(sets);
  std::cout << to_json(cfg).dump(2) << "\n";
  return 0;
}

int cmd_inspect(int argc, char** argv) {
  cxxopts::Options o("polargpt inspect", "spectral norms of a checkpoint's matrices and its Lipschitz certificate");
  o.add_options()("ckpt", "checkpoint (or run) directory", cxxopts::value<std::string>())(
      "json", "print one JSON object {\"matrices\": [...], \"certificate\": {...}}");
  auto r = parse(o, argc, argv);
  const nlohmann::json report = inspect_checkpoint(resolve_ckpt(need(r, "ckpt")));
  std::cout << (r.count("json") ? report.dump(2) + "\n" : inspect_text(report));
  return 0;
}

// Runs every config of a sweep file (sweep/sweep_spec.hpp), restartable (sweep/runner.hpp).
// Exit code 3 when every run was attempted but some failed.
int cmd_sweep(int argc, char** argv) {
  cxxopts::Options o("polargpt sweep", "train every config of a sweep file, then tabulate the results");
  o.add_options()("sweep", "sweep file (JSON)", cxxopts::value<std::string>())(
      "out", "sweep directory (default runs/sweeps/<sweep file name>)", cxxopts::value<std::string>())(
      "gpus", "comma-separated GPU ids: one run per GPU at a time, each with CUDA_VISIBLE_DEVICES=<id>",
      cxxopts::value<std::string>())("dry-run", "list the runs and what starting the sweep would do with each")(
      "retry-failed", "run failed runs again (from their checkpoint, if any)");
  o.parse_positional({"sweep"});
  auto r = parse(o, argc, argv);
  const std::string path = need(r, "sweep");
  const Sweep sweep = load_sweep(path);
  SweepOptions so;
  so.out_dir = r.count("out") ? r["out"].as<std::string>() : "runs/sweeps/" + fs::path(path).stem().string();
  so.retry_failed = r.count("retry-failed") > 0;
  if (r.count("gpus")) {
    std::stringstream ss(r["gpus"].as<std::string>());
    for (std::string id; std::getline(ss, id, ',');) {
      if (id.empty() || id.find_first_of(" \t=") != std::string::npos)
        throw UserError("--gpus: expected a comma-separated list of GPU ids such as 0,1,2,3, got '" +
                        r["gpus"].as<std::string>() + "'");
      if (std::find(so.gpus.begin(), so.gpus.end(), id) != so.gpus.end()) throw UserError("--gpus: GPU " + id + " listed twice");
      so.gpus.push_back(id);
    }
    if (so.gpus.empty()) throw UserError("--gpus: expected at least one GPU id");
  }
  if (r.count("dry-run")) {
    const auto plan = plan_sweep(sweep, so.out_dir, so.retry_failed);
    std::cout << "sweep " << path << ": " << sweep.runs.size() << " runs in " << so.out_dir << "\n";
    for (size_t i = 0; i < plan.size(); ++i)
      std::printf("%4zu  %-14s %s\n", i + 1, state_name(plan[i]), sweep.runs[i].name.c_str());
    return 0;
  }
  so.exe = fs::read_symlink("/proc/self/exe").string();
  const SweepResult res = run_sweep(sweep, so);
  spdlog::info("sweep: {} done, {} failed, {} not run{}; table in {}/summary.md", res.done, res.failed, res.not_run,
               res.interrupted ? " (interrupted: start the same command again to continue)" : "", so.out_dir);
  return res.failed > 0 && !res.interrupted ? 3 : 0;
}

}  // namespace

// OpenBLAS 0.3.21 runs its Haswell (AVX2) kernels on AMD CPUs that have AVX-512; its Skylake-X
// kernels are about 1.3x faster there (bench/RESULTS.md). It picks its kernels when the library
// loads, before main, so the choice is made by setting OPENBLAS_CORETYPE and starting again once.
// An explicit OPENBLAS_CORETYPE is left alone.
static void prefer_avx512_blas(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr || !__builtin_cpu_supports("avx512f")) return;
  ::setenv("OPENBLAS_CORETYPE", "SKYLAKEX", 1);
  ::execv("/proc/self/exe", argv);  // returns only on failure: carry on with the default kernels
}

int main(int argc, char** argv) {
  prefer_avx512_blas(argv);
  if (argc < 2 || std::string(argv[1]) == "-h" || std::string(argv[1]) == "--help" || std::string(argv[1]) == "help") {
    (argc < 2 ? std::cerr : std::cout) << "polargpt " << version() << " (train: " << train_devices() << ")\n" << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  if (cmd == "--version" || cmd == "version") {
    // `train:` lists the devices the trainer runs on (scripts/train.sh reads it).
    std::cout << "polargpt " << version() << " (backends: " << backends() << "; train: " << train_devices() << ")\n";
    return 0;
  }
  spdlog::set_pattern("[%H:%M:%S] %^%l%$ %v");
  try {
    if (cmd == "train") return cmd_train(argc - 1, argv + 1);
    if (cmd == "eval") return cmd_eval(argc - 1, argv + 1);
    if (cmd == "sample") return cmd_sample(argc - 1, argv + 1);
    if (cmd == "import") return cmd_import(argc - 1, argv + 1);
    if (cmd == "export") return cmd_export(argc - 1, argv + 1);
    if (cmd == "prepare") return cmd_prepare(argc - 1, argv + 1);
    if (cmd == "tokenize") return cmd_tokenize(argc - 1, argv + 1);
    if (cmd == "config") return cmd_config(argc - 1, argv + 1);
    if (cmd == "inspect") return cmd_inspect(argc - 1, argv + 1);
    if (cmd == "sweep") return cmd_sweep(argc - 1, argv + 1);
    std::cerr << "polargpt: unknown command '" << cmd
              << "' (expected train, eval, sample, import, export, prepare, tokenize, config, inspect, sweep)\n";
    return 2;
  } catch (const UserError& e) {
    std::cerr << "polargpt " << cmd << ": error: " << e.what() << "\n";
    return 2;
  } catch (const cxxopts::exceptions::exception& e) {
    std::cerr << "polargpt " << cmd << ": error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "polargpt " << cmd << ": internal error: " << e.what() << "\n";
    return 1;
  }
}
