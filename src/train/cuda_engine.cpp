// The CUDA engine (engine.hpp): CudaGpt on one GPU per rank. Device buffers, all allocated here,
// before the first step; compute on one stream:
//   master  fp32 [table.total()]  the weights the optimizer updates and checkpoints save
//   work    bf16 [table.total()]  their working copy, which forward and backward read
//   grads   fp32 [padded_total]   accumulated over the step's micro-batches (padded to the bucket
//                                 layout of dist/data_parallel.hpp; the padding stays 0)
//   + the optimizer's state (CudaOptimizer), CudaGpt's activation arena, the token batch, and
//     with spectral.method != none or spectral.monitor_every > 0 the CudaSpectral workspace (its
//     power-iteration vectors and work buffers); with a comm, one bucket of bf16 gradients
//     (dist.grad_dtype = bf16) and a few doubles for sum().
// After each update CudaSpectral projects the constrained matrices of master (and refreshes
// work), and with model.variant = lipschitz max-norms the embedding rows (whatever
// spectral.method); it also made the initial weights satisfy the constraint, and measures the
// monitor's sigma_max and the Lipschitz certificate's on the device.
// The update writes master and work in one pass (kernels/adamw.cuh). Host syncs per step: the
// loss of each micro-batch (CudaGpt::forward reads it back) and the gradient norm, which decides
// clipping and whether the step is skipped; the weights come to the host only for checkpoints,
// the spectral monitor and samples.
//
// Data parallelism (a CudaDistComm: one process per GPU through NcclComm, LOCAL_RANK's device):
//   start()        rank 0's master weights broadcast to every rank, work recast: identical
//                  replicas however initialised or loaded;
//   reduce_grads   after the step's last backward, the gradients averaged over ranks bucket by
//                  bucket (make_buckets: backward order, dist.bucket_mb), on the comm's stream,
//                  in fp32 or in bf16 (dist.grad_dtype: rounded to bf16 before the collective,
//                  widened after it, kernels/grad_cast.cuh); then the global norm of the
//                  averaged gradient, the same on every rank;
//   update         every rank runs AdamW on the whole averaged gradient, so the replicas stay
//                  identical; Muon's Newton-Schulz work is split over the ranks (each matrix on
//                  one rank, FLOP-balanced, results all-gathered: optim/cuda_muon.hpp), and each
//                  rank keeps the momentum of its own matrices only;
//   sum            doubles all-reduced through a device buffer (losses, the stop flag, eval sums);
//   checkpoints    written by rank 0, full fp32 state gathered from the ranks' shares (a
//                  collective; without sharded state the other ranks skip the download), so they
//                  resume on any world size.
// ZeRO-1 (dist.zero = 1, W > 1; the CPU's dist/data_parallel.hpp on the device): AdamW keeps
// moments for the rank's part r of every bucket only (CudaOptimizerDist::adamw_owned).
//   optim.kind = adamw: each bucket is reduce-scattered (avg; fp32, or bf16 through the staging
//                  bucket), rank r receiving part r in place; the rest of the gradient buffer is
//                  zeroed, so the norm kernel gives the norm of the rank's parts, and their squares
//                  are summed over ranks (sum()) into the global norm;
//   optim.kind = muon: the buckets are all-reduced as without ZeRO (a matrix's owner needs its
//                  whole gradient; an all-reduce moves what reduce-scatter + all-gather would);
//                  AdamW's moments are sharded as above, Muon's by matrix (as always over ranks);
//   after update   each bucket of master weights is all-gathered from its parts (master is padded
//                  to the bucket layout), and work recast from master.
// Overlap with backward: during the step's last micro-batch, CudaGpt::backward reports each stage
// it has enqueued (head + ln_f, then layers n_layer-1 .. 0; after_stage). A bucket is ready once
// every tensor it overlaps belongs to a finished stage (gpt_bucket_stages, engine.hpp: the
// lowest stage among them; wte and wpe, and the head when tied to wte, finish last), and the buckets are launched in
// their (backward) order as soon as the next one is ready: the comm's stream waits on an event
// recorded on the compute stream at that point, so NCCL reduces bucket k while the compute
// stream runs the backward of the layers below it. reduce_grads launches what is left and makes
// the compute stream wait for all of it. With RunOptions::after_backward (a test hook that edits
// the gradients before the reduction) every bucket is reduced in reduce_grads instead.
#include <algorithm>
#include <cmath>
#include <optional>

#include <spdlog/fmt/fmt.h>

#include "backend/cuda/device.hpp"
#include "core/error.hpp"
#include "dist/data_parallel.hpp"
#include "kernels/adamw.cuh"
#include "kernels/grad_cast.cuh"
#include "model/cuda_gpt.hpp"
#include "model/gpt.hpp"
#include "model/moe_balance.hpp"
#include "optim/cuda_adamw.hpp"
#include "spectral/constrain.hpp"
#include "spectral/cuda_constrain.hpp"
#include "train/checkpoint.hpp"
#include "train/engine.hpp"

namespace pg {

namespace {

std::string gib(size_t bytes) { return fmt::format("{:.2f} GiB", double(bytes) / double(size_t(1) << 30)); }

class CudaEngine final : public TrainEngine {
 public:
  CudaEngine(const Config& cfg, const RunOptions& opt, CudaDistComm comm)
      : cfg_(cfg),
        opt_(opt),
        table_(with_constraints(cfg, build_gpt_params(cfg))),
        comm_(comm.comm),
        comm_stream_(comm.comm ? comm.stream : nullptr),
        rank_(comm.comm ? comm.comm->rank() : 0),
        world_size_(comm.comm ? comm.comm->world_size() : 1),
        layout_(dist::make_buckets(table_, world_size_, cfg.dist.bucket_mb)),
        bf16_grads_(comm.comm && world_size_ > 1 && cfg.dist.grad_dtype == "bf16"),
        zero_(comm.comm && world_size_ > 1 && cfg.dist.zero == 1),
        scatter_(zero_ && cfg.optim.kind == "adamw") {
    bucket_stage_ = gpt_bucket_stages(cfg, table_, layout_.buckets);
    for (const dist::Bucket& b : layout_.buckets) {
      const int64_t part = (b.end - b.begin) / world_size_;
      owned_.push_back({b.begin + rank_ * part, b.begin + (rank_ + 1) * part});
    }
    for (const auto& p : table_.entries())
      if (p.name.ends_with(".moe.router.score_bias")) score_biases_.push_back(&p);
    const size_t n = size_t(table_.total());
    const size_t padded = size_t(layout_.padded_total);
    int64_t longest_bucket = 0;
    for (const dist::Bucket& b : layout_.buckets) longest_bucket = std::max(longest_bucket, b.end - b.begin);
    const size_t staging = bf16_grads_ ? size_t(longest_bucket) : 0;
    const size_t BT = size_t(cfg.train.batch_size) * size_t(cfg.model.seq_len);
    host_params_.assign(n, 0.0f);
    init_gpt_params(cfg, table_, host_params_, cfg.train.seed);
    int dev = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
    device_name_ = prop.name;
    size_t total_mem = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_before_, &total_mem));

    // The memory plan; CudaGpt's constructor checks arena + the rest against free memory before
    // anything big is allocated.
    const size_t n_master = zero_ ? padded : n;  // ZeRO-1 all-gathers whole buckets of it
    plan_.master = n_master * sizeof(float);
    plan_.work = n * sizeof(kernels::bf16);
    plan_.grads = padded * sizeof(float);
    plan_.optimizer = cuda_optimizer_state_bytes(cfg.optim, table_, optimizer_dist(nullptr));
    plan_.optimizer_one_rank = cuda_optimizer_state_bytes(cfg.optim, table_);
    plan_.other = 2 * BT * sizeof(int32_t) + (kernels::kNormBlocks + 1) * sizeof(float) +
                  staging * sizeof(kernels::bf16) + kSumSlots * sizeof(double);
    // Allocated first, so the free memory CudaGpt checks against already excludes it.
    if (cfg.spectral.method != "none" || cfg.spectral.monitor_every > 0 || lipschitz()) {
      spectral_.emplace(cfg, table_, stream_.get());
      plan_.spectral = spectral_->workspace_bytes();
    }
    const size_t outside_arena = plan_.master + plan_.work + plan_.grads + plan_.optimizer + plan_.other;
    model_.emplace(cfg, table_, cfg.train.batch_size, stream_.get(), outside_arena);
    plan_.arena = model_->arena_bytes();

    master_ = cuda::DeviceBuffer<float>(n_master);
    master_.zero(stream_.get());  // the padding past table.total() (ZeRO-1) stays 0
    work_ = cuda::DeviceBuffer<kernels::bf16>(n);
    grads_ = cuda::DeviceBuffer<float>(padded);
    grads_.zero(stream_.get());  // the padding past table.total() is never written again
    staging_ = cuda::DeviceBuffer<kernels::bf16>(staging);
    if (comm_) sums_ = cuda::DeviceBuffer<double>(kSumSlots);
    tokens_x_ = cuda::DeviceBuffer<int32_t>(BT);
    tokens_y_ = cuda::DeviceBuffer<int32_t>(BT);
    norm_ = cuda::DeviceBuffer<float>(size_t(kernels::kNormBlocks) + 1);
    optimizer_ = make_cuda_optimizer(cfg.optim, table_, stream_.get(), optimizer_dist(grads_.data()));
    upload_params();
    project(0.0, 0);  // start inside the constraint set, as the CPU engine
    host_stale_ = projects();  // the host copy still holds the unprojected initial weights
  }

  const ParamTable& table() const override { return table_; }
  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  double detected_peak_tflops() const override { return peak_tflops_for_device(device_name_); }

  std::vector<std::string> describe() const override {
    const size_t total =
        plan_.master + plan_.work + plan_.grads + plan_.optimizer + plan_.arena + plan_.other + plan_.spectral;
    std::vector<std::string> out = {
        fmt::format("device: cuda, {} ({} free before the run)", device_name_, gib(free_before_)),
        fmt::format("device memory: {} = params fp32 {} + bf16 {} + grads fp32 {} + optimizer state {} + "
                    "activation arena {} + tokens and scratch {} + spectral {}",
                    gib(total), gib(plan_.master), gib(plan_.work), gib(plan_.grads), gib(plan_.optimizer),
                    gib(plan_.arena), gib(plan_.other), gib(plan_.spectral))};
    if (plan_.optimizer != plan_.optimizer_one_rank)
      out.push_back(fmt::format("optimizer state on this rank: {:.2f} MiB ({} bytes), sharded over {} ranks; one rank "
                                "would hold {:.2f} MiB",
                                double(plan_.optimizer) / 1048576.0, plan_.optimizer, world_size_,
                                double(plan_.optimizer_one_rank) / 1048576.0));
    for (const auto& line : optimizer_->describe()) out.push_back("optimizer " + line);
    if (const int64_t V = cfg_.model.vocab_size; V % 64 != 0)
      out.push_back(fmt::format("model.vocab_size {} is not a multiple of 64: the LM head's GEMMs run on unaligned "
                                "rows, much slower ({} would pad it)",
                                V, (V + 63) / 64 * 64));
    if (comm_)
      out.push_back(fmt::format("dist: {} rank(s), one GPU each; {} gradient buckets in {} ({} during backward); {}",
                                world_size_, layout_.buckets.size(), world_size_ > 1 ? cfg_.dist.grad_dtype : "fp32",
                                scatter_ ? "reduce-scattered" : "all-reduced",
                                zero_ ? "ZeRO-1: AdamW moments sharded by bucket part, parameters all-gathered"
                                      : "every rank runs AdamW on the whole gradient"));
    return out;
  }

  void begin_step() override {
    grads_.zero(stream_.get());
    moe_step_.clear();
    micro_ = 0;
    launched_ = 0;
  }

  double micro_step(std::span<const int32_t> x, std::span<const int32_t> y, double loss_scale) override {
    upload_tokens(x, y);
    const double loss = model_->forward(work_.data(), tokens_x_.data(), tokens_y_.data(), cfg_.train.batch_size,
                                        cfg_.model.seq_len);
    // The step's last micro-batch starts the reduction of each bucket as backward finishes it.
    const bool overlap = comm_ && !opt_.after_backward && ++micro_ == cfg_.train.grad_accum;
    if (overlap) model_->backward(work_.data(), grads_.data(), loss_scale, [this](int stage) { launch_ready(stage); });
    else model_->backward(work_.data(), grads_.data(), loss_scale);
    if (cfg_.moe.n_expert > 0) moe_step_.add(model_->moe_stats());  // read back by forward's sync
    return loss;
  }

  const MoeStepStats& moe_step() const override { return moe_step_; }

  double reduce_grads(int step) override {
    const int64_t n = table_.total();
    if (opt_.after_backward) {  // a test hook: the gradients make a round trip through the host
      stream_.synchronize();
      host_grads_.resize(size_t(n));
      const size_t bytes = size_t(n) * sizeof(float);  // the padding past table.total() stays 0
      CUDA_CHECK(cudaMemcpy(host_grads_.data(), grads_.data(), bytes, cudaMemcpyDeviceToHost));
      opt_.after_backward(step, host_grads_);
      CUDA_CHECK(cudaMemcpy(grads_.data(), host_grads_.data(), bytes, cudaMemcpyHostToDevice));
    }
    if (comm_) all_reduce_grads();
    if (scatter_) {  // keep the rank's parts only: the norm below is then theirs
      for (const ElementRange& r : owned_) {
        const dist::Bucket& b = layout_.buckets[size_t(&r - owned_.data())];
        CUDA_CHECK(cudaMemsetAsync(grads_.data() + b.begin, 0, size_t(r.begin - b.begin) * sizeof(float), stream_.get()));
        CUDA_CHECK(cudaMemsetAsync(grads_.data() + r.end, 0, size_t(b.end - r.end) * sizeof(float), stream_.get()));
      }
    }
    const int64_t len = scatter_ ? layout_.padded_total : n;
    kernels::global_grad_norm(norm_.data(), norm_.data() + 1, grads_.data(), len, stream_.get());
    float norm = 0.0f;
    CUDA_CHECK(cudaMemcpyAsync(&norm, norm_.data(), sizeof(float), cudaMemcpyDeviceToHost, stream_.get()));
    stream_.synchronize();
    if (!scatter_) return double(norm);
    double squares = double(norm) * double(norm);  // the global norm: sum of the ranks' squares
    sum(std::span<double>(&squares, 1));
    return std::sqrt(squares);
  }

  void sum(std::span<double> x) override {
    if (!comm_) return;  // one rank
    PG_CHECK(x.size() <= size_t(kSumSlots), "CudaEngine::sum: at most " + std::to_string(kSumSlots) + " values");
    // Its own device buffer, only touched on the comm's stream: no ordering with compute needed.
    CUDA_CHECK(cudaMemcpyAsync(sums_.data(), x.data(), x.size_bytes(), cudaMemcpyHostToDevice, comm_stream_));
    comm_->all_reduce(sums_.data(), int64_t(x.size()), dist::DType::f64, dist::ReduceOp::sum);
    CUDA_CHECK(cudaMemcpyAsync(x.data(), sums_.data(), x.size_bytes(), cudaMemcpyDeviceToHost, comm_stream_));
    CUDA_CHECK(cudaStreamSynchronize(comm_stream_));
  }

  void update(float grad_scale, double lr_factor, double lr, int64_t t, int step) override {
    optimizer_->step(master_.data(), work_.data(), grads_.data(), grad_scale, lr_factor, t);
    if (zero_) gather_params();
    project(lr, step + 1);
    update_score_bias_on_device();
    host_stale_ = true;
  }

  std::vector<nlohmann::json> spectral_monitor(int64_t step) override {
    PG_CHECK(spectral_.has_value(), "CudaEngine: spectral monitor without spectral.monitor_every");
    return spectral_->monitor_lines(master_.data(), step);
  }

  double eval_batch(std::span<const int32_t> x, std::span<const int32_t> y, int64_t* n_correct) override {
    upload_tokens(x, y);
    return model_->forward(work_.data(), tokens_x_.data(), tokens_y_.data(), cfg_.train.batch_size,
                           cfg_.model.seq_len, n_correct);
  }

  std::optional<nlohmann::json> device_certificate() override {
    if (!lipschitz()) return std::nullopt;
    return spectral_->certificate(master_.data()).to_json();
  }

  std::span<const float> host_params() override {
    if (host_stale_) {
      stream_.synchronize();
      CUDA_CHECK(cudaMemcpy(host_params_.data(), master_.data(), host_params_.size() * sizeof(float),
                            cudaMemcpyDeviceToHost));
      host_stale_ = false;
    }
    return host_params_;
  }

  CheckpointTensors checkpoint_tensors() override {
    CheckpointTensors c;
    // Rank 0 writes the checkpoint; the replicas are identical. Sharded optimizer state is
    // gathered first, with every rank taking part.
    const bool sharded = world_size_ > 1 && (zero_ || cfg_.optim.kind == "muon");
    if (rank_ != 0 && !sharded) return c;
    std::vector<StateTensor> state = optimizer_->download_state();
    if (rank_ != 0) return c;
    c.params = host_params();
    c.optimizer = std::move(state);
    if (projects()) {
      spectral_state_ = spectral_->download_state();
      for (const StateTensor& s : spectral_state_)
        c.extra.push_back({s.name, "F32", s.shape, s.data, size_t(s.numel) * sizeof(float)});
    }
    return c;
  }

  void load_checkpoint(const std::string& dir) override {
    load_model_weights(dir, table_, host_params_);
    upload_params();
    load_optimizer_state(dir, optimizer_->host_state());  // the whole state; each rank uploads its share
    optimizer_->upload_state();
    if (projects() && cfg_.spectral.warm_start) {  // the power vectors the checkpoint holds (none: cold start)
      const io::SafetensorsReader r(dir + "/optimizer.safetensors");
      bool any = false;
      for (const StateTensor& s : spectral_->download_state())
        if (r.has(s.name)) {
          r.read_into(s.name, s.data, "F32", s.shape);
          any = true;
        }
      if (any) spectral_->upload_state();
    }
  }

  void start() override {
    if (comm_) {  // identical replicas: rank 0's master weights, and their bf16 copy recast
      comm_after_compute();
      comm_->broadcast(master_.data(), table_.total(), dist::DType::f32, 0);
      compute_after_comm();
      kernels::copy_to_bf16(work_.data(), master_.data(), table_.total(), stream_.get());
      host_stale_ = true;
    }
    stream_.synchronize();
  }

 private:
  static constexpr int kSumSlots = 8;

  // The comm's stream waits for the work enqueued on the compute stream so far; and the reverse.
  void comm_after_compute() {
    compute_done_.record(stream_.get());
    CUDA_CHECK(cudaStreamWaitEvent(comm_stream_, compute_done_.get(), 0));
  }
  void compute_after_comm() {
    comm_done_.record(comm_stream_);
    CUDA_CHECK(cudaStreamWaitEvent(stream_.get(), comm_done_.get(), 0));
  }

  // Launches the reduction of the buckets, in order, that the backward has finished once stage
  // `stage` is enqueued (after_stage of CudaGpt::backward; -1: the whole backward).
  void launch_ready(int stage) {
    const size_t first = launched_;
    while (launched_ < layout_.buckets.size() && bucket_stage_[launched_] >= stage) ++launched_;
    if (launched_ == first) return;
    comm_after_compute();
    for (size_t k = first; k < launched_; ++k) reduce_bucket(layout_.buckets[k]);
  }

  // The bucket's gradients <- their average over the ranks, on the comm's stream (one rank with
  // a comm: an fp32 all-reduce over one rank, which leaves them bitwise unchanged). ZeRO-1 with
  // AdamW: only part rank_ of the bucket receives it (reduce-scatter, in place).
  void reduce_bucket(const dist::Bucket& b) {
    float* g = grads_.data() + b.begin;
    const int64_t len = b.end - b.begin, part = len / world_size_, at = rank_ * part;
    if (!bf16_grads_) {
      if (scatter_) comm_->reduce_scatter(g, g + at, part, dist::DType::f32, dist::ReduceOp::avg);
      else comm_->all_reduce(g, len, dist::DType::f32, dist::ReduceOp::avg);
    } else if (!scatter_) {  // one staging bucket, reused: the comm's stream runs the buckets in order
      kernels::copy_to_bf16(staging_.data(), g, len, comm_stream_);
      comm_->all_reduce(staging_.data(), len, dist::DType::bf16, dist::ReduceOp::avg);
      kernels::copy_from_bf16(g, staging_.data(), len, comm_stream_);
    } else {
      kernels::copy_to_bf16(staging_.data(), g, len, comm_stream_);
      comm_->reduce_scatter(staging_.data(), staging_.data() + at, part, dist::DType::bf16, dist::ReduceOp::avg);
      kernels::copy_from_bf16(g + at, staging_.data() + at, part, comm_stream_);
    }
  }

  // grads_ <- their average over the ranks: the buckets the backward did not launch yet, then
  // the compute stream waits for every bucket.
  void all_reduce_grads() {
    launch_ready(-1);
    compute_after_comm();
  }

  // ZeRO-1: every rank's updated parts of master to every rank, bucket by bucket (in place), then
  // work recast from the whole of it.
  void gather_params() {
    comm_after_compute();
    for (size_t k = 0; k < layout_.buckets.size(); ++k) {
      const dist::Bucket& b = layout_.buckets[k];
      comm_->all_gather(master_.data() + owned_[k].begin, master_.data() + b.begin, owned_[k].size(),
                        dist::DType::f32);
    }
    compute_after_comm();
    kernels::copy_to_bf16(work_.data(), master_.data(), table_.total(), stream_.get());
  }

  // The part of the optimizer's work this rank does (make_cuda_optimizer); scratch: the gradient
  // buffer, unused between steps.
  CudaOptimizerDist optimizer_dist(float* scratch) const {
    CudaOptimizerDist d;
    if (!comm_ || world_size_ == 1) return d;
    d.comm = comm_, d.comm_stream = comm_stream_, d.scratch = scratch;
    if (zero_) d.adamw_owned = owned_, d.buckets = layout_.buckets;
    return d;
  }

  // moe.balance = bias: the selection biases (E floats per MoE block) are moved on the host, in
  // host_params_, by update_score_bias (moe_balance.hpp) as on the CPU, and uploaded. Nothing
  // else changes them (no gradient reaches them, so AdamW leaves them as they are), so the host
  // copy stays current without reading them back: no host sync. (Pageable memory: each copy has
  // read its source when the call returns.)
  void update_score_bias_on_device() {
    if (score_biases_.empty() || moe_step_.empty()) return;
    update_score_bias(cfg_, table_, host_params_, moe_step_);
    for (const ParamInfo* b : score_biases_) {
      CUDA_CHECK(cudaMemcpyAsync(master_.data() + b->offset, host_params_.data() + b->offset,
                                 size_t(b->numel) * sizeof(float), cudaMemcpyHostToDevice, stream_.get()));
      kernels::copy_to_bf16(work_.data() + b->offset, master_.data() + b->offset, b->numel, stream_.get());
    }
  }

  bool lipschitz() const { return cfg_.model.variant == "lipschitz"; }
  // Whether project() changes anything: a spectral.method, or lipschitz's embedding max-norm.
  bool projects() const { return spectral_.has_value() && (cfg_.spectral.method != "none" || lipschitz()); }
  // The spectral projection of master_ (work_ refreshed), after the update at learning rate lr.
  void project(double lr, int64_t step) {
    if (projects()) spectral_->project(master_.data(), work_.data(), lr, step);
  }

  // host_params_ -> master_ and its bf16 copy work_.
  void upload_params() {
    stream_.synchronize();
    CUDA_CHECK(cudaMemcpy(master_.data(), host_params_.data(), host_params_.size() * sizeof(float),
                          cudaMemcpyHostToDevice));
    kernels::copy_to_bf16(work_.data(), master_.data(), table_.total(), stream_.get());
    host_stale_ = false;
  }

  // Pageable host memory: the copy has read x and y when the call returns.
  void upload_tokens(std::span<const int32_t> x, std::span<const int32_t> y) {
    CUDA_CHECK(cudaMemcpyAsync(tokens_x_.data(), x.data(), x.size_bytes(), cudaMemcpyHostToDevice, stream_.get()));
    CUDA_CHECK(cudaMemcpyAsync(tokens_y_.data(), y.data(), y.size_bytes(), cudaMemcpyHostToDevice, stream_.get()));
  }

  struct MemoryPlan {
    size_t master = 0, work = 0, grads = 0, optimizer = 0, arena = 0, other = 0, spectral = 0;
    size_t optimizer_one_rank = 0;  // what the optimizer state would take without sharding
  };

  Config cfg_;
  const RunOptions& opt_;
  ParamTable table_;
  dist::Comm* comm_;           // null: one rank without collectives
  cudaStream_t comm_stream_;   // where comm_'s collectives run
  int rank_, world_size_;
  dist::BucketLayout layout_;
  bool bf16_grads_;
  bool zero_;     // ZeRO-1 over several ranks
  bool scatter_;  // ZeRO-1 with AdamW alone: gradients reduce-scattered
  std::vector<ElementRange> owned_;  // per bucket, part rank_ of it (ZeRO-1's share)
  std::vector<const ParamInfo*> score_biases_;  // moe.balance = bias: the selection biases
  std::vector<int> bucket_stage_;  // gpt_bucket_stages(), per bucket of layout_
  int micro_ = 0;                  // micro-batches of this step so far
  size_t launched_ = 0;            // buckets of this step whose reduction is enqueued
  std::string device_name_;
  size_t free_before_ = 0;
  MemoryPlan plan_;
  cuda::Stream stream_;
  std::optional<CudaSpectral> spectral_;
  std::vector<StateTensor> spectral_state_;  // host mirrors of its vectors, for checkpoints
  std::optional<CudaGpt> model_;
  cuda::DeviceBuffer<float> master_, grads_, norm_;  // norm_: [0] the norm, [1..] its partial sums
  cuda::DeviceBuffer<kernels::bf16> work_, staging_;  // staging_: one bucket of bf16 gradients
  cuda::DeviceBuffer<double> sums_;                     // sum()'s values on the device
  cuda::Event compute_done_, comm_done_;
  cuda::DeviceBuffer<int32_t> tokens_x_, tokens_y_;
  std::unique_ptr<CudaOptimizer> optimizer_;
  std::vector<float> host_params_, host_grads_;
  bool host_stale_ = false;
  MoeStepStats moe_step_;
};

}  // namespace

std::unique_ptr<TrainEngine> make_cuda_engine(const Config& cfg, const RunOptions& opt, CudaDistComm comm) {
  PG_CHECK(!comm.comm || comm.stream, "make_cuda_engine: a comm needs the stream its collectives run on");
  return std::make_unique<CudaEngine>(cfg, opt, comm);
}

}  // namespace pg
