// The spectral config section, project_constrained over a whole parameter table, the monitor's
// spectral.jsonl, warm-start vectors through checkpoints, training runs whose saved checkpoints
// obey w_max by an independent Jacobi SVD, and `polargpt inspect --json`.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

#include "common/svd.hpp"
#include "common/synthetic_data.hpp"
#include "common/temp_dir.hpp"
#include "config/config.hpp"
#include "core/error.hpp"
#include "io/checkpoint_dir.hpp"
#include "io/jsonl.hpp"
#include "io/safetensors.hpp"
#include "model/gpt.hpp"
#include "spectral/certificate.hpp"
#include "spectral/constrain.hpp"
#include "spectral/gram_hardcap.hpp"
#include "spectral/spectral_log.hpp"
#include "train/checkpoint.hpp"
#include "train/inspect.hpp"
#include "train/trainer.hpp"

using namespace pg;
namespace fs = std::filesystem;

namespace {

const std::vector<std::string> kLipschitz = {"model.variant=lipschitz", "model.norm=none", "model.bias=false",
                                             "model.tie_embeddings=false"};

std::vector<std::string> plus(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::string error_of(const std::vector<std::string>& sets) {
  try {
    default_config(sets);
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

Config small_run(const test::TempDir& data, const std::vector<std::string>& extra) {
  return default_config(plus({"model.n_layer=2", "model.n_head=2", "model.d_model=16", "model.vocab_size=32",
                              "model.seq_len=16", "train.batch_size=4", "train.max_steps=12", "train.eval_every=6",
                              "train.eval_batches=2", "train.log_every=1", "train.checkpoint_every=4",
                              "optim.warmup_steps=2", "optim.lr=0.01", "train.threads=1",
                              "data.train=" + data / "syn_train_*.bin", "data.val=" + data / "syn_val_*.bin"},
                             extra));
}

// Every constrained matrix of the checkpoint: sigma_max by Jacobi SVD <= w_max (1 + tol).
void require_within_bound(const std::string& ckpt, const Config& cfg, double tol) {
  const ParamTable table = with_constraints(cfg, build_gpt_params(cfg));
  std::vector<float> P(size_t(table.total()));
  load_model_weights(ckpt, table, P);
  int checked = 0;
  for (const auto& p : table.entries()) {
    if (!p.constrained) continue;
    const double s1 = testing::singular_values(P.data() + p.offset, int(p.rows()), int(p.cols()))[0];
    const double w = sigma_bound(cfg.spectral, p.role, p.rows(), p.cols());
    CAPTURE(ckpt, p.name, s1, w);
    REQUIRE(s1 <= w * (1 + tol));
    ++checked;
  }
  REQUIRE(checked > 0);
}

}  // namespace

TEST_CASE("spectral config: bad values are one-line errors naming the key", "[spectral]") {
  REQUIRE(error_of({"spectral.method=clip"}).find("spectral.method") != std::string::npos);
  REQUIRE(error_of({"spectral.w_max=0"}).find("spectral.w_max") != std::string::npos);
  REQUIRE(error_of({"spectral.w_max_attn=-1"}).find("spectral.w_max_attn") != std::string::npos);
  REQUIRE(error_of({"spectral.roles=attn,norm"}).find("spectral.roles") != std::string::npos);
  REQUIRE(error_of({"spectral.norm=frobenius"}).find("spectral.norm") != std::string::npos);
  REQUIRE(error_of({"spectral.power_iters=0"}).find("spectral.power_iters") != std::string::npos);
  REQUIRE(error_of({"spectral.monitor_method=svd"}).find("spectral.monitor_method") != std::string::npos);
  REQUIRE(error_of({"spectral.monitor_every=-1"}).find("spectral.monitor_every") != std::string::npos);
  const std::string softcap = error_of({"spectral.method=softcap", "optim.kind=adamw"});
  REQUIRE(softcap.find("softcap") != std::string::npos);
  REQUIRE(softcap.find("optim.kind") != std::string::npos);
  REQUIRE(error_of({"spectral.method=softcap", "optim.kind=muon"}).empty());
  REQUIRE(error_of({"model.variant=lipschitz"}).find("model.variant = lipschitz") != std::string::npos);
  REQUIRE(error_of(plus(kLipschitz, {"model.qk_norm=true"})).find("model.variant") != std::string::npos);
  REQUIRE(error_of(kLipschitz).empty());
  for (const auto& e : {error_of({"spectral.roles=x"}), error_of({"model.variant=lipschitz"})})
    REQUIRE(e.find('\n') == std::string::npos);
}

TEST_CASE("spectral: project_constrained bounds every constrained matrix (Jacobi SVD)", "[spectral]") {
  for (const std::string method : {"hardcap", "normalize"}) {
    for (const std::string norm : {"spectral", "rms"}) {
      const Config cfg = default_config(plus(kLipschitz, {"model.n_layer=1", "model.d_model=16", "model.n_head=2",
                                                          "model.vocab_size=24", "model.seq_len=8",
                                                          "spectral.method=" + method, "spectral.norm=" + norm,
                                                          "spectral.w_max=0.8", "spectral.w_max_head=2"}));
      const ParamTable table = with_constraints(cfg, build_gpt_params(cfg));
      std::vector<float> P(size_t(table.total()));
      Rng rng(42);
      for (auto& x : P) x = float(0.5 * rng.normal());  // sigma_max of every matrix well above 2
      SpectralState state;
      project_constrained(table, P, state, cfg, 0.01, 1);
      int constrained = 0;
      for (const auto& p : table.entries()) {
        if (!p.is_matrix()) continue;
        const auto s = testing::singular_values(P.data() + p.offset, int(p.rows()), int(p.cols()));
        if (p.role == Role::embed || p.role == Role::pos_embed) {
          REQUIRE_FALSE(p.constrained);
          continue;
        }
        REQUIRE(p.constrained);
        ++constrained;
        const double w = sigma_bound(cfg.spectral, p.role, p.rows(), p.cols());
        CAPTURE(method, norm, p.name, s[0], w);
        REQUIRE(s[0] <= w * (1 + 1e-2));
        REQUIRE(s[0] >= w * (1 - 1e-2));  // it started above w, and each method lands sigma_1 on w
      }
      REQUIRE(constrained == 7);  // q k v o fc proj head
    }
  }
}

TEST_CASE("spectral: the monitor writes sigma_max lines for matching matrices and a certificate", "[spectral]") {
  REQUIRE(monitor_matches("h.*.attn.*", "h.1.attn.q.weight"));
  REQUIRE(monitor_matches("wte,*.mlp.fc.*", "h.0.mlp.fc.weight"));
  REQUIRE_FALSE(monitor_matches("h.*.attn.*", "h.0.mlp.fc.weight"));
  const test::TempDir d("spectral-monitor");
  test::write_markov_shards(d.str(), 32, 20000, 4000, 3);
  const Config cfg = small_run(d, plus(kLipschitz, {"spectral.method=normalize", "spectral.monitor_every=4",
                                                    "spectral.monitor_filter=h.*.attn.q.*,lm_head.*",
                                                    "spectral.monitor_method=power", "spectral.monitor_iters=300",
                                                    "model.pos=rope"}));
  train(cfg, {d / "run"});
  const auto lines = io::read_jsonl(d / "run/spectral.jsonl");
  // steps 4, 8, 12: 2 q matrices + the head, then the certificate line
  REQUIRE(lines.size() == 3 * 4);
  const ParamTable table = with_constraints(cfg, build_gpt_params(cfg));
  std::vector<float> P(size_t(table.total()));
  load_model_weights(d / "run/checkpoints/00000012", table, P);
  for (size_t i = 0; i < lines.size(); ++i) {
    const auto& j = lines[i];
    REQUIRE(j.at("step").get<int>() == 4 * int(i / 4 + 1));
    if (i % 4 == 3) {
      REQUIRE(j.at("certificate").contains("log10_lipschitz_bound"));
      REQUIRE(j.at("certificate").contains("log10_lipschitz_bound_wmax"));
      continue;
    }
    const std::string name = j.at("name");
    REQUIRE((name.ends_with(".attn.q.weight") || name == "lm_head.weight"));
    REQUIRE(j.at("method") == "power");
    if (j.at("step") == 12) {  // the last step's values are the checkpoint's
      const ParamInfo& p = table.get(name);
      const double s1 = testing::singular_values(P.data() + p.offset, int(p.rows()), int(p.cols()))[0];
      CAPTURE(name, s1, j.at("sigma_max").get<double>());
      REQUIRE(std::abs(j.at("sigma_max").get<double>() - s1) <= 1e-3 * s1);
    }
  }
  // metrics.jsonl carries the certificate at every eval
  int evals = 0;
  for (const auto& j : io::read_jsonl(d / "run/metrics.jsonl"))
    if (j.contains("val_loss")) {
      ++evals;
      REQUIRE(std::isfinite(j.at("log10_lipschitz_bound").get<double>()));
      REQUIRE(j.at("lipschitz_bound").get<double>() > 0.0);
    }
  REQUIRE(evals == 2);
}

TEST_CASE("spectral: short training runs save checkpoints within w_max (hardcap, normalize)", "[spectral]") {
  const test::TempDir d("spectral-train");
  test::write_markov_shards(d.str(), 32, 20000, 4000, 5);
  for (const std::string method : {"hardcap", "normalize"}) {
    for (const bool lip : {false, true}) {
      auto sets = std::vector<std::string>{"spectral.method=" + method, "spectral.w_max=0.9", "optim.lr=0.03"};
      if (lip) sets = plus(sets, kLipschitz);
      else sets.push_back("model.tie_embeddings=false");
      const Config cfg = small_run(d, sets);
      const std::string run = d / (method + (lip ? "-lip" : "-gpt"));
      const RunSummary s = train(cfg, {run});
      REQUIRE(std::isfinite(s.final_val_loss));
      for (const char* step : {"00000004", "00000012"}) require_within_bound(run + "/checkpoints/" + step, cfg, 1e-2);
    }
  }
}

TEST_CASE("spectral: warm-start vectors round-trip through checkpoints and resume exactly", "[spectral]") {
  const test::TempDir d("spectral-warm");
  test::write_markov_shards(d.str(), 32, 20000, 4000, 7);
  const Config cfg = small_run(d, plus(kLipschitz, {"spectral.method=normalize", "spectral.power_iters=1",
                                                    "spectral.w_max=0.7"}));
  train(cfg, {d / "full"});
  // The checkpoint holds one u and one v per constrained matrix, and they load back bit for bit.
  const ParamTable table = with_constraints(cfg, build_gpt_params(cfg));
  const io::SafetensorsReader r(d / "full/checkpoints/00000008/optimizer.safetensors");
  SpectralState st;
  st.load(r, table);
  int n = 0;
  for (const auto& p : table.entries()) {
    if (!p.constrained) continue;
    ++n;
    REQUIRE(st.warm(p));
    REQUIRE((r.info(p.name + ".power_u").shape == std::vector<int64_t>{1, p.rows()}));
    const auto bytes = r.read_bytes(p.name + ".power_v");
    REQUIRE(std::memcmp(bytes.data(), st.v(p, 0), bytes.size()) == 0);
  }
  REQUIRE(n == 13);
  const auto refs = st.tensor_refs(table);
  REQUIRE(refs.size() == size_t(2 * n));

  // The same run rolled back to its step-8 checkpoint and resumed: the same losses.
  const Config part = cfg;
  train(cfg, {d / "part"});  // the same run, then rolled back to its step-8 checkpoint
  fs::remove_all(d / "part/checkpoints/00000012");
  io::write_file_atomic(d / "part/checkpoints/latest", "00000008\n");
  train(part, {d / "part", true});
  const auto a = io::read_jsonl(d / "full/metrics.jsonl"), b = io::read_jsonl(d / "part/metrics.jsonl");
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) REQUIRE(a[i].at("train_loss") == b[i].at("train_loss"));
}

TEST_CASE("spectral: inspect --json lists every matrix with sigma_max, w_max and the certificate", "[spectral]") {
  const test::TempDir d("spectral-inspect");
  test::write_markov_shards(d.str(), 32, 20000, 4000, 9);
  const Config cfg = small_run(d, plus(kLipschitz, {"spectral.method=hardcap", "spectral.w_max=0.8",
                                                    "spectral.roles=attn,mlp", "train.max_steps=4"}));
  train(cfg, {d / "run"});
  const std::string ckpt = d / "run/checkpoints/00000004";
  const nlohmann::json rep = inspect_checkpoint(ckpt);
  const ParamTable table = with_constraints(cfg, build_gpt_params(cfg));
  std::vector<float> P(size_t(table.total()));
  load_model_weights(ckpt, table, P);
  int mats = 0;
  for (const auto& p : table.entries()) mats += p.is_matrix();
  REQUIRE(rep.at("matrices").size() == size_t(mats));
  for (const auto& m : rep.at("matrices")) {
    const ParamInfo& p = table.get(m.at("name").get<std::string>());
    REQUIRE(m.at("shape").get<std::vector<int64_t>>() == p.shape);
    REQUIRE(m.at("role") == std::string(role_name(p.role)));
    const double s1 = testing::singular_values(P.data() + p.offset, int(p.rows()), int(p.cols()))[0];
    REQUIRE(std::abs(m.at("sigma_max").get<double>() - s1) <= 1e-3 * s1);
    REQUIRE(m.contains("w_max") == p.constrained);
    if (p.constrained) REQUIRE(m.at("w_max").get<double>() == Approx(0.8));
  }
  // The head is not constrained here: no w_max certificate, the measured one equals the library's.
  const auto& c = rep.at("certificate");
  REQUIRE_FALSE(c.contains("log10_lipschitz_bound_wmax"));
  REQUIRE(c.at("log10_lipschitz_bound").get<double>() ==
          Approx(lipschitz_certificate(cfg, table, P).log10_bound).epsilon(1e-9));

  // The command line prints the same object.
  const std::string cmd = std::string(POLARGPT_BINARY) + " inspect --json --ckpt " + d / "run" + " 2>/dev/null";
  FILE* pipe = popen(cmd.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string out;
  char buf[4096];
  for (size_t k; (k = fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, k);
  REQUIRE(WEXITSTATUS(pclose(pipe)) == 0);
  const nlohmann::json cli = nlohmann::json::parse(out);
  REQUIRE(cli.at("matrices").size() == rep.at("matrices").size());
  REQUIRE(cli.at("certificate").at("log10_lipschitz_bound").get<double>() ==
          Approx(c.at("log10_lipschitz_bound").get<double>()).epsilon(1e-9));
}

TEST_CASE("spectral: the Gram-matrix hard cap gives min(sigma, beta) for every singular value", "[spectral]") {
  struct Shape {
    int rows, cols;
  };
  Rng rng(77);
  for (const Shape sh : {Shape{200, 12}, Shape{10, 90}, Shape{24, 24}}) {
    const int k = std::min(sh.rows, sh.cols);
    const auto s = testing::log_spaced(k, 10.0, 1e3);  // 10 down to 0.01
    const auto c = testing::with_singular_values(sh.rows, sh.cols, s, rng);
    std::vector<float> W = testing::to_float(c.W);
    const double beta = 1.3;
    spectral_hardcap_gram(W.data(), sh.rows, sh.cols, beta);
    const auto got = testing::singular_values(W.data(), sh.rows, sh.cols);
    for (int i = 0; i < k; ++i) {
      CAPTURE(sh.rows, sh.cols, i, s[size_t(i)], got[size_t(i)]);
      REQUIRE(std::abs(got[size_t(i)] - std::min(s[size_t(i)], beta)) <= 1e-5 * 10.0);
    }
  }
}
