// The CUDA engine (engine.hpp): CudaGpt on one GPU. Device buffers, all allocated here, before
// the first step, and all used on one stream:
//   master  fp32 [table.total()]  the weights the optimizer updates and checkpoints save
//   work    bf16 [table.total()]  their working copy, which forward and backward read
//   grads   fp32 [table.total()]  accumulated over the step's micro-batches
//   + the optimizer's state (CudaOptimizer), CudaGpt's activation arena, the token batch, and
//     with spectral.method != none or spectral.monitor_every > 0 the CudaSpectral workspace (its
//     power-iteration vectors and work buffers).
// After each update CudaSpectral projects the constrained matrices of master (and refreshes
// work), and with model.variant = lipschitz max-norms the embedding rows (whatever
// spectral.method); it also made the initial weights satisfy the constraint, and measures the
// monitor's sigma_max and the Lipschitz certificate's on the device.
// The update writes master and work in one pass (kernels/adamw.cuh). Host syncs per step: the
// loss of each micro-batch (CudaGpt::forward reads it back) and the gradient norm, which decides
// clipping and whether the step is skipped; the weights come to the host only for checkpoints,
// the spectral monitor and samples.
#include <optional>

#include <spdlog/fmt/fmt.h>

#include "backend/cuda/device.hpp"
#include "core/error.hpp"
#include "kernels/adamw.cuh"
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
  CudaEngine(const Config& cfg, const RunOptions& opt)
      : cfg_(cfg), opt_(opt), table_(with_constraints(cfg, build_gpt_params(cfg))) {
    const size_t n = size_t(table_.total());
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
    plan_.master = n * sizeof(float);
    plan_.work = n * sizeof(kernels::bf16);
    plan_.grads = n * sizeof(float);
    plan_.optimizer = cuda_optimizer_state_bytes(cfg.optim, table_);
    plan_.other = 2 * BT * sizeof(int32_t) + (kernels::kNormBlocks + 1) * sizeof(float);
    // Allocated first, so the free memory CudaGpt checks against already excludes it.
    if (cfg.spectral.method != "none" || cfg.spectral.monitor_every > 0 || lipschitz()) {
      spectral_.emplace(cfg, table_, stream_.get());
      plan_.spectral = spectral_->workspace_bytes();
    }
    const size_t outside_arena = plan_.master + plan_.work + plan_.grads + plan_.optimizer + plan_.other;
    model_.emplace(cfg, table_, cfg.train.batch_size, stream_.get(), outside_arena);
    plan_.arena = model_->arena_bytes();

    master_ = cuda::DeviceBuffer<float>(n);
    work_ = cuda::DeviceBuffer<kernels::bf16>(n);
    grads_ = cuda::DeviceBuffer<float>(n);
    tokens_x_ = cuda::DeviceBuffer<int32_t>(BT);
    tokens_y_ = cuda::DeviceBuffer<int32_t>(BT);
    norm_ = cuda::DeviceBuffer<float>(size_t(kernels::kNormBlocks) + 1);
    optimizer_ = make_cuda_optimizer(cfg.optim, table_, stream_.get());
    upload_params();
    project(0.0, 0);  // start inside the constraint set, as the CPU engine
  }

  const ParamTable& table() const override { return table_; }
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
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
    for (const auto& line : optimizer_->describe()) out.push_back("optimizer " + line);
    return out;
  }

  void begin_step() override {
    grads_.zero(stream_.get());
    moe_step_.clear();
  }

  double micro_step(std::span<const int32_t> x, std::span<const int32_t> y, double loss_scale) override {
    upload_tokens(x, y);
    const double loss = model_->forward(work_.data(), tokens_x_.data(), tokens_y_.data(), cfg_.train.batch_size,
                                        cfg_.model.seq_len);
    model_->backward(work_.data(), grads_.data(), loss_scale);
    if (cfg_.moe.n_expert > 0) moe_step_.add(model_->moe_stats());  // read back by forward's sync
    return loss;
  }

  const MoeStepStats& moe_step() const override { return moe_step_; }

  double reduce_grads(int step) override {
    const int64_t n = table_.total();
    if (opt_.after_backward) {  // a test hook: the gradients make a round trip through the host
      stream_.synchronize();
      host_grads_.resize(size_t(n));
      CUDA_CHECK(cudaMemcpy(host_grads_.data(), grads_.data(), grads_.bytes(), cudaMemcpyDeviceToHost));
      opt_.after_backward(step, host_grads_);
      CUDA_CHECK(cudaMemcpy(grads_.data(), host_grads_.data(), grads_.bytes(), cudaMemcpyHostToDevice));
    }
    // Data-parallel runs would all-reduce grads_ here (NcclComm on device buffers) before the norm.
    kernels::global_grad_norm(norm_.data(), norm_.data() + 1, grads_.data(), n, stream_.get());
    float norm = 0.0f;
    CUDA_CHECK(cudaMemcpyAsync(&norm, norm_.data(), sizeof(float), cudaMemcpyDeviceToHost, stream_.get()));
    stream_.synchronize();
    return double(norm);
  }

  void sum(std::span<double>) override {}  // one rank

  void update(float grad_scale, double lr_factor, double lr, int64_t t, int step) override {
    optimizer_->step(master_.data(), work_.data(), grads_.data(), grad_scale, lr_factor, t);
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
      CUDA_CHECK(cudaMemcpy(host_params_.data(), master_.data(), master_.bytes(), cudaMemcpyDeviceToHost));
      host_stale_ = false;
    }
    return host_params_;
  }

  CheckpointTensors checkpoint_tensors() override {
    CheckpointTensors c;
    c.params = host_params();
    c.optimizer = optimizer_->download_state();
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
    const std::vector<StateTensor> views = optimizer_->download_state();  // the host mirror to load into
    load_optimizer_state(dir, views);
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

  void start() override { stream_.synchronize(); }

 private:
  // moe.balance = bias: the selection biases (E floats per MoE block) make a round trip through
  // host_params_, where update_score_bias (moe_balance.hpp) moves them as on the CPU.
  void update_score_bias_on_device() {
    if (cfg_.moe.balance != "bias" || moe_step_.empty()) return;
    std::vector<const ParamInfo*> biases;
    for (const auto& p : table_.entries())
      if (p.name.ends_with(".moe.router.score_bias")) biases.push_back(&p);
    for (const ParamInfo* b : biases)
      CUDA_CHECK(cudaMemcpyAsync(host_params_.data() + b->offset, master_.data() + b->offset,
                                 size_t(b->numel) * sizeof(float), cudaMemcpyDeviceToHost, stream_.get()));
    stream_.synchronize();
    update_score_bias(cfg_, table_, host_params_, moe_step_);
    for (const ParamInfo* b : biases) {
      CUDA_CHECK(cudaMemcpyAsync(master_.data() + b->offset, host_params_.data() + b->offset,
                                 size_t(b->numel) * sizeof(float), cudaMemcpyHostToDevice, stream_.get()));
      kernels::copy_to_bf16(work_.data() + b->offset, master_.data() + b->offset, b->numel, stream_.get());
    }
    stream_.synchronize();  // the host copy is read by the next update's copies: keep it stable
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
    master_.upload(host_params_);
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
  };

  Config cfg_;
  const RunOptions& opt_;
  ParamTable table_;
  std::string device_name_;
  size_t free_before_ = 0;
  MemoryPlan plan_;
  cuda::Stream stream_;
  std::optional<CudaSpectral> spectral_;
  std::vector<StateTensor> spectral_state_;  // host mirrors of its vectors, for checkpoints
  std::optional<CudaGpt> model_;
  cuda::DeviceBuffer<float> master_, grads_, norm_;  // norm_: [0] the norm, [1..] its partial sums
  cuda::DeviceBuffer<kernels::bf16> work_;
  cuda::DeviceBuffer<int32_t> tokens_x_, tokens_y_;
  std::unique_ptr<CudaOptimizer> optimizer_;
  std::vector<float> host_params_, host_grads_;
  bool host_stale_ = false;
  MoeStepStats moe_step_;
};

}  // namespace

std::unique_ptr<TrainEngine> make_cuda_engine(const Config& cfg, const RunOptions& opt) {
  return std::make_unique<CudaEngine>(cfg, opt);
}

}  // namespace pg
