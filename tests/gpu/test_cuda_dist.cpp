// Data-parallel training on --device cuda, on the one GPU a test machine has:
//   - the bf16 casts around a bf16 gradient collective, against the host rounding (bitwise);
//   - scripts/launch.sh --nproc-per-node 1 -- polargpt train --device cuda: a rank through the
//     whole NCCL start-up at WORLD_SIZE=1, with the losses of the plain single-process run;
//   - 2 ranks as threads sharing the GPU: CudaEngine over a test comm that stages its device
//     buffers through host memory into the in-process comm (dist/in_process_comm.hpp). Their
//     losses equal one rank's with the same global batch (with 1 and 2 micro-batches per step),
//     their replicas stay bitwise identical, bf16 gradient reduction stays close, Muon runs, and
//     the 2-rank checkpoint resumes on one rank;
//   - ZeRO-1 (dist.zero = 1) on 2 and 3 such ranks: one rank's losses with the same global batch
//     for AdamW (gradients reduce-scattered) and Muon, identical replicas, the optimizer state per
//     rank in the memory plan smaller than one rank's, and a ZeRO-1 checkpoint resuming on
//     another world size;
//   - the optimizers themselves over 2 and 3 ranks (CudaOptimizerDist: Muon's NS split over the
//     ranks, AdamW's moments sharded): the single-rank update, the whole state gathered for
//     checkpoints and scattered back, and each rank's device bytes below one rank's.
// The staging comm copies a bucket to the host
//     when the backward hook launches it, so a bucket launched before the backward finished
//     writing it would make the ranks' weights differ: the identical-replica checks also check
//     which buckets the overlap with backward launches when.
//
// Tolerances. Same run twice on the GPU: 5e-3 relative per step (the order of atomic adds in a
// few backward kernels differs, as in test_cuda_trainer.cpp's resume). One rank of 8 sequences
// against two of 4: 1e-2 relative per step (kTolBf16: the GEMMs see other shapes, so bf16
// rounding differs from the first step on, and the difference grows a little each step); the
// first step's loss to 2e-3 (forward only, same weights). bf16 against fp32 gradient reduction:
// 2e-2 (one more bf16 rounding of every gradient per step). The distributed optimizer step against
// the single-rank one on the same inputs: AdamW and the momentum are elementwise fp32 arithmetic,
// the same per element on any rank, to kTolElementwise = 1e-6 (a range cut elsewhere may take
// the AdamW kernel's scalar path instead of its 4-wide one); the Muon update (W - W0 per matrix) to kTolNsF32 = 1e-4 with fp32 NS and kTolNsBf16 =
// 3e-2 with bf16 NS (the tolerances of NS against the CPU, test_cuda_muon.cpp: a rank batches a
// group with fewer members, so cuBLASLt may sum in another order; the worst error is printed).
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "common/free_port.hpp"
#include "common/run_metrics.hpp"
#include "common/synthetic_data.hpp"
#include "common/temp_dir.hpp"
#include "config/config.hpp"
#include "core/rng.hpp"
#include "dist/in_process_comm.hpp"
#include "gpu_testing.hpp"
#include "optim/cuda_muon.hpp"
#include "optim/cuda_optimizer.hpp"
#include "io/checkpoint_dir.hpp"
#include "io/jsonl.hpp"
#include "kernels/adamw.cuh"
#include "kernels/grad_cast.cuh"
#include "train/engine.hpp"
#include "train/trainer.hpp"

using namespace pg;
namespace fs = std::filesystem;

namespace {

constexpr double kTolRerun = 5e-3, kTolSplit = 1e-2, kTolFirst = 2e-3, kTolBf16Grads = 2e-2;
constexpr double kTolNsF32 = 1e-4, kTolNsBf16 = 3e-2, kTolElementwise = 1e-6;

bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

// A Comm on device buffers over a Comm on host buffers: every collective copies its inputs to
// the host (after everything enqueued on its stream), runs the host collective, and copies the
// results back before returning. Slow and synchronous, but it lets ranks that are threads share
// one GPU.
class HostStagingComm final : public dist::Comm {
 public:
  explicit HostStagingComm(dist::Comm& host) : host_(host) {}
  int rank() const override { return host_.rank(); }
  int world_size() const override { return host_.world_size(); }
  cudaStream_t stream() const { return stream_.get(); }

  void all_reduce(void* buf, int64_t count, dist::DType t, dist::ReduceOp op) override {
    down(a_, buf, bytes(count, t));
    host_.all_reduce(a_.data(), count, t, op);
    up(buf, a_, bytes(count, t));
  }
  void reduce_scatter(const void* send, void* recv, int64_t recv_count, dist::DType t, dist::ReduceOp op) override {
    down(a_, send, bytes(recv_count * world_size(), t));
    b_.resize(a_.size());
    host_.reduce_scatter(a_.data(), b_.data(), recv_count, t, op);
    up(recv, b_, bytes(recv_count, t));
  }
  void all_gather(const void* send, void* recv, int64_t send_count, dist::DType t) override {
    down(a_, send, bytes(send_count, t));
    b_.resize(size_t(world_size()) * a_.size());
    host_.all_gather(a_.data(), b_.data(), send_count, t);
    up(recv, b_, bytes(send_count * world_size(), t));
  }
  void broadcast(void* buf, int64_t count, dist::DType t, int root) override {
    down(a_, buf, bytes(count, t));
    host_.broadcast(a_.data(), count, t, root);
    up(buf, a_, bytes(count, t));
  }
  void barrier() override { host_.barrier(); }

 private:
  static size_t bytes(int64_t count, dist::DType t) { return size_t(count) * dist::dtype_size(t); }
  // Host buffers of doubles: aligned for every dtype.
  void down(std::vector<double>& h, const void* dev, size_t n_bytes) {
    h.resize((n_bytes + 7) / 8);
    CUDA_CHECK(cudaMemcpyAsync(h.data(), dev, n_bytes, cudaMemcpyDeviceToHost, stream_.get()));
    stream_.synchronize();
  }
  void up(void* dev, const std::vector<double>& h, size_t n_bytes) {
    CUDA_CHECK(cudaMemcpyAsync(dev, h.data(), n_bytes, cudaMemcpyHostToDevice, stream_.get()));
    stream_.synchronize();
  }

  dist::Comm& host_;
  cuda::Stream stream_;
  std::vector<double> a_, b_;
};

Config run_config(const test::TempDir& data, int batch_size, std::vector<std::string> extra = {}) {
  std::vector<std::string> sets = {"model.n_layer=2",       "model.n_head=2",        "model.d_model=64",
                                   "model.d_ff=128",        "model.vocab_size=64",   "model.seq_len=32",
                                   "train.max_steps=20",    "train.eval_every=10",   "train.eval_batches=4",
                                   "train.log_every=1",     "train.checkpoint_every=10", "optim.warmup_steps=2",
                                   "optim.lr=3e-3",         "train.threads=2",       "train.device=cuda",
                                   "dist.bucket_mb=0.05",  // several buckets for this small model
                                   "train.batch_size=" + std::to_string(batch_size),
                                   "data.train=" + data / "syn_train_*.bin", "data.val=" + data / "syn_val_*.bin"};
  sets.insert(sets.end(), extra.begin(), extra.end());
  return default_config(sets);
}


double rel(double a, double b) { return std::abs(a - b) / std::abs(b); }

void require_close(const std::vector<double>& got, const std::vector<double>& ref, double tol) {
  REQUIRE(got.size() == ref.size());
  for (size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i, got[i], ref[i]);
    REQUIRE(rel(got[i], ref[i]) < tol);
  }
}

// `world` ranks as threads on the current GPU, each a CudaEngine over a HostStagingComm; returns
// every rank's final fp32 master weights (and rank 0's start-up lines in *describe).
std::vector<std::vector<float>> train_threads(int world, const Config& cfg, const RunOptions& opt,
                                              std::vector<std::string>* describe = nullptr) {
  std::vector<std::vector<float>> finals(static_cast<size_t>(world));
  dist::run_ranks(world, 120.0, [&](dist::Comm& host) {
    CUDA_CHECK(cudaSetDevice(0));
    HostStagingComm comm(host);
    prepare_run_dir(opt);
    const std::unique_ptr<TrainEngine> engine = make_cuda_engine(cfg, opt, {&comm, comm.stream()});
    if (describe && comm.rank() == 0) *describe = engine->describe();
    run_training(cfg, opt, *engine);
    const std::span<const float> p = engine->host_params();
    finals[size_t(comm.rank())].assign(p.begin(), p.end());
  });
  return finals;
}

int sh(const std::string& cmd) {
  const int st = std::system(("bash -c '" + cmd + "'").c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

}  // namespace

TEST_CASE("cuda dist: bf16 gradient casts round to nearest even and widen exactly", "[gpu][dist]") {
  if (!have_gpu()) {
    WARN("no GPU: skipped");
    return;
  }
  const int64_t n = 100003;  // not a multiple of the block
  Rng rng(19);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = float(rng.normal() * std::exp(4.0 * rng.normal()));  // many binades
  cuda::Stream s;
  cuda::DeviceBuffer<float> d_x{static_cast<size_t>(n)}, d_back{static_cast<size_t>(n)};
  cuda::DeviceBuffer<kernels::bf16> d_b{static_cast<size_t>(n)};
  d_x.upload(x);
  kernels::copy_to_bf16(d_b.data(), d_x.data(), n, s.get());
  kernels::copy_from_bf16(d_back.data(), d_b.data(), n, s.get());
  s.synchronize();
  std::vector<float> back(static_cast<size_t>(n));
  CUDA_CHECK(cudaMemcpy(back.data(), d_back.data(), d_back.bytes(), cudaMemcpyDeviceToHost));
  // Tolerance 0: the device's rounding is the host's (dist::bf16_bits), widening is exact.
  int64_t bad = 0;
  double err2 = 0, ref2 = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float want = dist::bf16_value(dist::bf16_bits(x[size_t(i)]));
    bad += back[size_t(i)] != want;
    err2 += double(back[size_t(i)] - x[size_t(i)]) * double(back[size_t(i)] - x[size_t(i)]);
    ref2 += double(x[size_t(i)]) * double(x[size_t(i)]);
  }
  CHECK(bad == 0);
  CHECK(std::sqrt(err2 / ref2) < test::kTolBf16);  // and it did round: not far, not exact
  CHECK(std::sqrt(err2 / ref2) > 0.0);
}

TEST_CASE("cuda dist: launch.sh --nproc-per-node 1 trains through NCCL with the single-process losses",
          "[gpu][dist]") {
#ifndef POLARGPT_WITH_NCCL
  WARN("this build has no NCCL: skipped");
  return;
#endif
  if (!have_gpu()) {
    WARN("no GPU: skipped");
    return;
  }
  test::TempDir data("cddata"), run("cdrun");
  test::write_markov_shards(data.str(), 64, 40000, 8000, 11);
  const RunSummary plain = train(run_config(data, 8), {run / "plain", false, {}});
  REQUIRE(plain.steps_done == 20);

  // The launched rank trains the plain run's exact config (config.json in its run directory).
  const std::string log = run / "launch.log";
  const std::string cmd = std::string(POLARGPT_SOURCE_DIR) + "/scripts/launch.sh --nproc-per-node 1 --master-port " +
                          std::to_string(test::free_port()) + " -- " + POLARGPT_BINARY + " train --device cuda --config " +
                          run / "plain/config.json" + " --out " + run / "launched" + " > " + log + " 2>&1";
  const int rc = sh(cmd);
  std::ifstream f(log);
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  CAPTURE(text);
  REQUIRE(rc == 0);
  CHECK(text.find("[rank 0] ") != std::string::npos);
  CHECK(text.find("dist: 1 rank(s)") != std::string::npos);  // the NCCL engine, not the plain one

  const auto ref = test::run_column(run / "plain", "train_loss"), got = test::run_column(run / "launched", "train_loss");
  REQUIRE(ref.size() == 20);
  CHECK(got.at(0) == ref.at(0));  // same init, same first batch, same forward
  require_close(got, ref, kTolRerun);
  require_close(test::run_column(run / "launched", "val_loss"), test::run_column(run / "plain", "val_loss"), kTolRerun);
  REQUIRE(io::find_latest_checkpoint(run / "launched").has_value());
}

TEST_CASE("cuda dist: 2 ranks sharing the GPU give one rank's losses with the same global batch; replicas "
          "stay identical; bf16 reduction is close; the checkpoint resumes on 1 rank",
          "[gpu][dist]") {
  if (!have_gpu()) {
    WARN("no GPU: skipped");
    return;
  }
  test::TempDir data("cddata"), run("cdrun");
  test::write_markov_shards(data.str(), 64, 40000, 8000, 11);
  // One rank through the same engine code path (a comm of one rank) and batch 8 ...
  const auto one = train_threads(1, run_config(data, 8), {run / "w1", false, {}});
  const auto ref = test::run_column(run / "w1", "train_loss"), ref_val = test::run_column(run / "w1", "val_loss");
  REQUIRE(ref.size() == 20);
  REQUIRE(ref_val.size() == 2);
  REQUIRE(ref.back() < ref.front() - 0.2);  // it learns
  // ... and the plain engine without a comm agrees with it.
  train(run_config(data, 8), {run / "plain", false, {}});
  require_close(test::run_column(run / "plain", "train_loss"), ref, kTolRerun);

  // Two ranks of 4 sequences: the same global batch of 8.
  const auto two = train_threads(2, run_config(data, 4), {run / "w2", false, {}});
  const auto got = test::run_column(run / "w2", "train_loss");
  REQUIRE(got.size() == 20);
  CHECK(rel(got[0], ref[0]) < kTolFirst);
  require_close(got, ref, kTolSplit);
  require_close(test::run_column(run / "w2", "val_loss"), ref_val, kTolSplit);
  // Every rank ran the same update on the same averaged gradient.
  REQUIRE(two.size() == 2);
  REQUIRE(two[0].size() == two[1].size());
  CHECK(two[0] == two[1]);
  REQUIRE(one.size() == 1);

  // Two micro-batches per step: only the last one's backward launches the bucket reductions.
  train_threads(1, run_config(data, 8, {"train.grad_accum=2", "train.max_steps=10"}), {run / "a1", false, {}});
  const auto acc2 = train_threads(2, run_config(data, 4, {"train.grad_accum=2", "train.max_steps=10"}),
                                  {run / "a2", false, {}});
  require_close(test::run_column(run / "a2", "train_loss"), test::run_column(run / "a1", "train_loss"), kTolSplit);
  CHECK(acc2[0] == acc2[1]);

  // bf16 gradient collectives: close to the fp32 ones.
  train_threads(2, run_config(data, 4, {"dist.grad_dtype=bf16"}), {run / "w2bf16", false, {}});
  require_close(test::run_column(run / "w2bf16", "train_loss"), got, kTolBf16Grads);

  // Muon: every rank runs all of CudaMuon on the averaged gradient.
  train_threads(1, run_config(data, 8, {"optim.kind=muon", "optim.lr=0.02"}), {run / "m1", false, {}});
  train_threads(2, run_config(data, 4, {"optim.kind=muon", "optim.lr=0.02"}), {run / "m2", false, {}});
  require_close(test::run_column(run / "m2", "train_loss"), test::run_column(run / "m1", "train_loss"), kTolSplit);

  // Rank 0's step-10 checkpoint of the 2-rank run resumes on one rank of 8 sequences.
  const std::string cut = run / "resumed";
  fs::create_directories(cut + "/checkpoints");
  fs::copy(run / "w2/checkpoints/00000010", cut + "/checkpoints/00000010", fs::copy_options::recursive);
  fs::copy_file(run / "w2/metrics.jsonl", cut + "/metrics.jsonl");
  const RunSummary s = train(run_config(data, 8), {cut, true, {}});
  REQUIRE(s.steps_done == 20);
  require_close(test::run_column(cut, "train_loss"), got, kTolSplit);
}

TEST_CASE("cuda dist: ZeRO-1 on 2 and 3 ranks sharing the GPU gives one rank's losses (AdamW, Muon); replicas "
          "stay identical; the optimizer state per rank shrinks; a ZeRO-1 checkpoint resumes on another world size",
          "[gpu][dist]") {
  if (!have_gpu()) {
    WARN("no GPU: skipped");
    return;
  }
  test::TempDir data("czdata"), run("czrun");
  test::write_markov_shards(data.str(), 64, 40000, 8000, 11);
  // A global batch of 12 sequences: 1 x 12, 2 x 6, 3 x 4.
  train_threads(1, run_config(data, 12), {run / "w1", false, {}});
  const auto ref = test::run_column(run / "w1", "train_loss");
  REQUIRE(ref.size() == 20);
  CHECK(ref.back() < ref.front() - 0.2);  // it learns

  std::vector<std::string> lines;
  const auto z2 = train_threads(2, run_config(data, 6, {"dist.zero=1"}), {run / "z2", false, {}}, &lines);
  const auto z2_loss = test::run_column(run / "z2", "train_loss");
  CHECK(rel(z2_loss.at(0), ref[0]) < kTolFirst);
  require_close(z2_loss, ref, kTolSplit);
  require_close(test::run_column(run / "z2", "val_loss"), test::run_column(run / "w1", "val_loss"), kTolSplit);
  CHECK(z2[0] == z2[1]);  // the all-gather made the replicas identical
  std::string all;
  for (const auto& l : lines) all += l + "\n";
  CAPTURE(all);
  CHECK(all.find("reduce-scattered") != std::string::npos);
  CHECK(all.find("sharded over 2 ranks") != std::string::npos);  // the memory plan's optimizer line

  const auto z3 = train_threads(3, run_config(data, 4, {"dist.zero=1"}), {run / "z3", false, {}});
  require_close(test::run_column(run / "z3", "train_loss"), ref, kTolSplit);
  CHECK(z3[0] == z3[1]);
  CHECK(z3[0] == z3[2]);

  // bf16 reduce-scatter: close to the fp32 one.
  train_threads(2, run_config(data, 6, {"dist.zero=1", "dist.grad_dtype=bf16"}), {run / "z2bf16", false, {}});
  require_close(test::run_column(run / "z2bf16", "train_loss"), z2_loss, kTolBf16Grads);

  // Muon: one rank; 2 ranks with ZeRO-1; 3 ranks without (NS split over the ranks either way).
  const std::vector<std::string> muon = {"optim.kind=muon", "optim.lr=0.02"};
  auto with = [&](std::vector<std::string> a, const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  train_threads(1, run_config(data, 12, muon), {run / "m1", false, {}});
  const auto m_ref = test::run_column(run / "m1", "train_loss");
  REQUIRE(m_ref.size() == 20);
  CHECK(m_ref.back() < m_ref.front() - 0.2);  // it learns
  lines.clear();
  const auto mz2 = train_threads(2, run_config(data, 6, with(muon, {"dist.zero=1"})), {run / "mz2", false, {}}, &lines);
  require_close(test::run_column(run / "mz2", "train_loss"), m_ref, kTolSplit);
  CHECK(mz2[0] == mz2[1]);
  all.clear();
  for (const auto& l : lines) all += l + "\n";
  CAPTURE(all);
  CHECK(all.find("NS split over 2 ranks") != std::string::npos);
  const auto m3 = train_threads(3, run_config(data, 4, muon), {run / "m3", false, {}});
  require_close(test::run_column(run / "m3", "train_loss"), m_ref, kTolSplit);
  CHECK(m3[0] == m3[1]);
  CHECK(m3[1] == m3[2]);

  // The 2-rank ZeRO-1 checkpoints at step 10 resume: AdamW's on 3 ZeRO-1 ranks, Muon's on 1 rank.
  auto resume_dir = [&](const std::string& from, const std::string& name) {
    const std::string cut = run / name;
    fs::create_directories(cut + "/checkpoints");
    fs::copy(from + "/checkpoints/00000010", cut + "/checkpoints/00000010", fs::copy_options::recursive);
    fs::copy_file(from + "/metrics.jsonl", cut + "/metrics.jsonl");
    return cut;
  };
  const std::string r3 = resume_dir(run / "z2", "z2_on_3");
  const auto r3_final = train_threads(3, run_config(data, 4, {"dist.zero=1"}), {r3, true, {}});
  require_close(test::run_column(r3, "train_loss"), z2_loss, kTolSplit);
  CHECK(r3_final[0] == r3_final[2]);
  const std::string r1 = resume_dir(run / "mz2", "mz2_on_1");
  const RunSummary s = train(run_config(data, 12, muon), {r1, true, {}});
  REQUIRE(s.steps_done == 20);
  require_close(test::run_column(r1, "train_loss"), test::run_column(run / "mz2", "train_loss"), kTolSplit);
}

namespace {

// Muon matrices of several shape groups (tall, wide, square, odd, 3-D experts) beside AdamW
// tensors, as in test_cuda_muon.cpp.
ParamTable split_table() {
  ParamTable t;
  t.add("wte.weight", {40, 32}, Role::embed, true);
  t.add("h.0.attn.qkv.weight", {96, 32}, Role::attn, true);
  t.add("h.0.ln_1.weight", {32}, Role::norm, false);
  t.add("h.0.attn.proj.weight", {32, 32}, Role::attn, true);
  t.add("h.0.mlp.proj.weight", {32, 96}, Role::mlp, true);
  t.add("h.0.moe.w_in", {3, 80, 48}, Role::expert, true);
  t.add("h.0.mlp.fc.weight", {37, 53}, Role::mlp, false);
  t.add("h.1.attn.qkv.weight", {96, 32}, Role::attn, true);
  t.add("h.1.ln_1.bias", {32}, Role::bias, false);
  t.add("h.1.attn.proj.weight", {32, 32}, Role::attn, true);
  t.add("h.1.moe.w_in", {4, 80, 48}, Role::expert, true);
  for (auto& p : t.entries()) p.muon = p.is_matrix() && p.role != Role::embed;
  return t;
}

struct RankResult {
  std::vector<float> params, params_again, params_fresh;  // after 2 steps; after a 3rd (original, reloaded)
  std::vector<std::vector<float>> state;                  // download_state() after 2 steps
  std::vector<std::string> names;
  size_t device_bytes = 0, planned_bytes = 0;
  std::string describe;
};

// Two steps of make_cuda_optimizer(cfg) on `world` ranks (world = 0: no comm at all), each
// followed by the ZeRO-1 all-gather of the parameters when `zero`; then the state gathered, a
// fresh optimizer loaded from it, and a third step on both.
std::vector<RankResult> optimizer_steps(int world, bool zero, const OptimConfig& cfg, const ParamTable& table,
                                        const std::vector<float>& w0, const std::vector<std::vector<float>>& grads) {
  std::vector<RankResult> out(size_t(std::max(world, 1)));
  auto body = [&](dist::Comm* host) {
    CUDA_CHECK(cudaSetDevice(0));
    std::optional<HostStagingComm> comm;
    if (host) comm.emplace(*host);
    const int W = comm ? comm->world_size() : 1, r = comm ? comm->rank() : 0;
    const dist::BucketLayout layout = dist::make_buckets(table, W, 0.01);
    cuda::Stream stream;
    cuda::DeviceBuffer<float> scratch(size_t(layout.padded_total)), w(size_t(layout.padded_total)),
        g(size_t(layout.padded_total));
    CudaOptimizerDist d;
    if (comm) {
      d.comm = &*comm, d.comm_stream = comm->stream(), d.scratch = scratch.data();
      if (zero)
        for (const dist::Bucket& b : layout.buckets) {
          const int64_t part = (b.end - b.begin) / W;
          d.adamw_owned.push_back({b.begin + r * part, b.begin + (r + 1) * part});
          d.buckets.push_back(b);
        }
    }
    auto upload_padded = [&](cuda::DeviceBuffer<float>& dst, const std::vector<float>& src) {
      std::vector<float> v(size_t(layout.padded_total), 0.0f);
      std::copy(src.begin(), src.end(), v.begin());
      dst.upload(v);
    };
    auto gather = [&] {  // ZeRO-1: every rank's parts of w to every rank
      if (!comm || !zero) return;
      stream.synchronize();
      for (size_t k = 0; k < layout.buckets.size(); ++k)
        comm->all_gather(w.data() + d.adamw_owned[k].begin, w.data() + layout.buckets[k].begin,
                         d.adamw_owned[k].size(), dist::DType::f32);
      CUDA_CHECK(cudaStreamSynchronize(comm->stream()));
    };
    auto params = [&] {
      stream.synchronize();
      std::vector<float> p = w.download();
      p.resize(size_t(table.total()));
      return p;
    };
    RankResult& res = out[size_t(r)];
    const auto opt = make_cuda_optimizer(cfg, table, stream.get(), d);
    res.device_bytes = opt->device_bytes();
    res.planned_bytes = cuda_optimizer_state_bytes(cfg, table, d);
    res.describe = opt->describe().front();
    upload_padded(w, w0);
    for (int64_t t = 1; t <= 2; ++t) {
      upload_padded(g, grads[size_t(t - 1)]);
      opt->step(w.data(), nullptr, g.data(), t == 2 ? 0.7f : 1.0f, 1.0, t);
      gather();
    }
    res.params = params();
    for (const StateTensor& st : opt->download_state()) {  // a collective on several ranks
      res.names.push_back(st.name);
      res.state.emplace_back(st.data, st.data + st.numel);
    }
    // A fresh optimizer given the whole state, as a checkpoint loader does; one more step on each.
    const auto fresh = make_cuda_optimizer(cfg, table, stream.get(), d);
    const auto views = fresh->host_state();
    for (size_t i = 0; i < views.size(); ++i) std::copy(res.state[i].begin(), res.state[i].end(), views[i].data);
    fresh->upload_state();
    upload_padded(g, grads[2]);
    opt->step(w.data(), nullptr, g.data(), 1.0f, 1.0, 3);
    gather();
    res.params_again = params();
    upload_padded(w, res.params);
    fresh->step(w.data(), nullptr, g.data(), 1.0f, 1.0, 3);
    gather();
    res.params_fresh = params();
  };
  if (world == 0) body(nullptr);
  else dist::run_ranks(world, 120.0, [&](dist::Comm& c) { body(&c); });
  return out;
}

}  // namespace

TEST_CASE("cuda dist: the optimizers over 2 and 3 ranks (Muon's NS split, ZeRO-1 AdamW) give the single-rank "
          "update; the sharded state gathers, reloads, and is smaller per rank",
          "[gpu][dist]") {
  if (!have_gpu()) {
    WARN("no GPU: skipped");
    return;
  }
  const uint64_t seed = 1501;
  CAPTURE(seed);
  Rng rng(seed);
  const ParamTable table = split_table();
  const size_t n = size_t(table.total());
  auto gaussian = [&](double std) {
    std::vector<float> v(n);
    for (float& x : v) x = float(std * rng.normal());
    return v;
  };
  const std::vector<float> w0 = gaussian(0.1);
  const std::vector<std::vector<float>> grads = {gaussian(1.0), gaussian(1.0), gaussian(1.0)};
  for (const std::string prec : {"fp32", "bf16"}) {
    OptimConfig cfg;
    cfg.kind = "muon", cfg.ns_schedule = "keller5", cfg.ns_precision = prec, cfg.weight_decay = 0.1;
    const double tol = prec == "fp32" ? kTolNsF32 : kTolNsBf16;
    const RankResult one = optimizer_steps(0, false, cfg, table, w0, grads)[0];
    for (const int world : {2, 3}) {
      for (const bool zero : {false, true}) {
        CAPTURE(prec, world, zero);
        const std::vector<RankResult> got = optimizer_steps(world, zero, cfg, table, w0, grads);
        double worst = 0.0;
        for (int r = 0; r < world; ++r) {
          const RankResult& x = got[size_t(r)];
          CAPTURE(r, x.describe);
          CHECK(x.params == got[0].params);  // identical replicas
          CHECK(x.params_again == got[0].params_again);
          CHECK(x.params_fresh == x.params_again);  // the reloaded state steps as the original
          for (const ParamInfo& p : table.entries()) {
            CAPTURE(p.name);
            const auto at = [&](const std::vector<float>& v) {
              std::vector<double> d(size_t(p.numel));
              for (int64_t i = 0; i < p.numel; ++i) d[size_t(i)] = double(v[size_t(p.offset + i)]) - w0[size_t(p.offset + i)];
              return d;
            };
            if (p.muon) {
              const double err = test::rel_diff(at(x.params), at(one.params));
              CHECK(err < tol);
              worst = std::max(worst, err);
            } else {
              CHECK(test::rel_diff(at(x.params), at(one.params)) < kTolElementwise);  // AdamW
            }
          }
          // The whole state, gathered: the single rank's names and values (elementwise arithmetic).
          REQUIRE(x.names == one.names);
          for (size_t i = 0; i < x.state.size(); ++i) {
            CAPTURE(x.names[i]);
            CHECK(test::rel_diff(x.state[i], one.state[i]) < kTolElementwise);
          }
          // Each rank holds less state than one rank would; the memory plan says how much.
          CHECK(x.device_bytes < one.device_bytes);
          CHECK(std::abs(double(x.device_bytes) - double(x.planned_bytes)) < 16384.0);
          CHECK(x.describe.find("NS split over " + std::to_string(world) + " ranks") != std::string::npos);
        }
        std::printf("distributed optimizer step: NS %s, %d ranks, zero %d: worst Muon update rel err %.2e (tol %.0e); "
                    "state bytes per rank %zu .. %zu vs one rank %zu\n",
                    prec.c_str(), world, int(zero), worst, tol, got.back().device_bytes, got[0].device_bytes,
                    one.device_bytes);
      }
    }
  }
}
