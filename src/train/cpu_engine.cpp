// The CPU engine (engine.hpp): CpuGpt<float> + Optimizer + dist::DataParallel on host buffers.
// Buffers are padded to the bucket layout (dist/data_parallel.hpp); ZeRO-1 shards AdamW's moments.
#include <array>
#include <memory>
#include <optional>

#include <spdlog/fmt/fmt.h>

#include "core/error.hpp"
#include "dist/data_parallel.hpp"
#include "dist/muon_split.hpp"
#include "model/cpu_gpt.hpp"
#include "model/gpt.hpp"
#include "optim/adamw.hpp"
#include "optim/muon_adamw.hpp"
#include "spectral/constrain.hpp"
#include "spectral/spectral_log.hpp"
#include "train/checkpoint.hpp"
#include "train/engine.hpp"

namespace pg {

namespace {

class CpuEngine final : public TrainEngine {
 public:
  CpuEngine(const Config& cfg, const RunOptions& opt, dist::Comm& comm)
      : cfg_(cfg),
        opt_(opt),
        comm_(comm),
        table_(with_constraints(cfg, build_gpt_params(cfg))),
        dp_(comm, table_, cfg.dist, /*whole_grads=*/cfg.dist.zero == 1 && cfg.optim.kind == "muon"),
        params_(size_t(dp_.padded_total()), 0.0f),
        grads_(size_t(dp_.padded_total()), 0.0f) {
    init_gpt_params(cfg, table_, params_, cfg.train.seed);
    // The bias update reads the step's routing stats, which are per rank: replicas would drift apart.
    if (comm.world_size() > 1 && cfg.moe.n_expert > 0 && cfg.moe.balance == "bias")
      throw UserError("moe.balance = bias: not supported with more than one data-parallel rank yet; use moe.balance = aux");
    // Muon's Newton-Schulz matrices are split over the ranks (dist/muon_split.hpp).
    NsSplitFn ns_split;
    if (comm.world_size() > 1)
      ns_split = [&comm](std::span<float* const> mats, std::span<const MatrixShape> shapes, const NsLocalFn& local) {
        std::vector<dist::NsMatrix> dshapes;
        for (const MatrixShape& s : shapes) dshapes.push_back({s.rows, s.cols});
        dist::orthogonalize_distributed(comm, mats, dshapes,
                                        [&](std::span<float* const> sub, std::span<const dist::NsMatrix> sub_shapes) {
                                          std::vector<MatrixShape> ms;
                                          for (const dist::NsMatrix& s : sub_shapes) ms.push_back({s.rows, s.cols});
                                          local(sub, ms);
                                        });
      };
    // ZeRO-1 shards AdamW's moments by rank; beside Muon the gradients are all-reduced (see
    // DataParallel) and Muon keeps its whole state on every rank.
    if (cfg.dist.zero == 1 && cfg.optim.kind == "muon") {
      auto o = std::make_unique<MuonAdamW>(cfg.optim, table_, std::move(ns_split), dp_.owned());
      zero_adamw_ = &o->adamw();
      zero_muon_ = &o->muon();
      optimizer_ = std::move(o);
    } else if (cfg.dist.zero == 1) {
      auto a = std::make_unique<AdamW>(cfg.optim, table_, dp_.owned());
      zero_adamw_ = a.get();
      optimizer_ = std::move(a);
    } else {
      optimizer_ = make_optimizer(cfg.optim, table_, std::move(ns_split));
    }
    project_constrained(table_, params_, spectral_, cfg, 0.0, 0);  // start inside the constraint set
    model_.emplace(cfg, table_, cfg.train.batch_size);
  }

  const ParamTable& table() const override { return table_; }
  int rank() const override { return comm_.rank(); }
  int world_size() const override { return comm_.world_size(); }

  std::vector<std::string> describe() const override {
    std::vector<std::string> out = {fmt::format("device: cpu, activations {:.1f} MiB", model_->arena_bytes() / 1048576.0)};
    for (const auto& line : optimizer_->describe()) out.push_back("optimizer " + line);
    if (cfg_.train.recompute != "none")
      out.push_back("train.recompute = " + cfg_.train.recompute + " is for the GPU: the cpu backend keeps every activation");
    if (world_size() > 1)
      out.push_back(fmt::format("dist: {} ranks, {} gradient buckets in {}, zero {}", world_size(), dp_.buckets().size(),
                                cfg_.dist.grad_dtype, cfg_.dist.zero));
    return out;
  }

  void begin_step() override {
    std::fill(grads_.begin(), grads_.end(), 0.0f);
    moe_step_.clear();
  }

  double micro_step(std::span<const int32_t> x, std::span<const int32_t> y, double loss_scale) override {
    const int B = cfg_.train.batch_size, T = cfg_.model.seq_len;
    const double loss = model_->forward(params_.data(), x.data(), y.data(), B, T);
    model_->backward(params_.data(), grads_.data(), loss_scale);
    moe_step_.add(model_->moe_stats());
    return loss;
  }

  const MoeStepStats& moe_step() const override { return moe_step_; }

  double reduce_grads(int step) override {
    if (opt_.after_backward) opt_.after_backward(step, grads_);
    dp_.reduce_grads(grads_);
    return dp_.grad_norm(grads_);
  }

  void sum(std::span<double> x) override {
    if (world_size() > 1) dp_.sum(x);
  }

  void update(float grad_scale, double lr_factor, double lr, int64_t t, int step) override {
    if (grad_scale != 1.0f) dp_.scale_grads(grads_, grad_scale);
    optimizer_->step(params_, grads_, lr_factor, t);
    dp_.gather_params(params_);
    project_constrained(table_, params_, spectral_, cfg_, lr, step + 1);
    update_score_bias(cfg_, table_, params_, moe_step_);
  }

  double eval_batch(std::span<const int32_t> x, std::span<const int32_t> y, int64_t* n_correct) override {
    return model_->forward(params_.data(), x.data(), y.data(), cfg_.train.batch_size, cfg_.model.seq_len, n_correct);
  }

  std::span<const float> host_params() override {
    return std::span<const float>(params_).first(size_t(table_.total()));
  }

  std::vector<nlohmann::json> spectral_monitor(int64_t step) override {
    return spectral_monitor_lines(cfg_, table_, host_params(), step);
  }

  CheckpointTensors checkpoint_tensors() override {
    CheckpointTensors c;
    c.params = host_params();
    c.optimizer = full_state();
    c.extra = spectral_.tensor_refs(table_);
    return c;
  }

  void load_checkpoint(const std::string& dir) override {
    load_model_weights(dir, table_, params_);
    if (zero_adamw_) {
      load_optimizer_state(dir, zero_state_views());
      dp_.scatter_state(full_m_, zero_adamw_->m());
      dp_.scatter_state(full_v_, zero_adamw_->v());
    } else {
      load_optimizer_state(dir, optimizer_->state());
    }
    if (cfg_.spectral.warm_start) spectral_.load(io::SafetensorsReader(dir + "/optimizer.safetensors"), table_);
  }

  void start() override { dp_.broadcast_params(params_); }  // identical replicas, however initialised or loaded

 private:
  // Whole-buffer optimizer state (ZeRO-1 ranks hold only their parts and gather them; a
  // collective, every rank takes part).
  std::vector<StateTensor> full_state() {
    if (!zero_adamw_) return optimizer_->state();
    std::vector<StateTensor> state = zero_state_views();
    dp_.gather_state(zero_adamw_->m(), full_m_);
    dp_.gather_state(zero_adamw_->v(), full_v_);
    return state;
  }

  // ZeRO-1: named views of the whole optimizer state, AdamW's moments in the whole-buffer copies
  // full_m_ / full_v_ (zeroed here) and Muon's, if any, in its own (whole) buffers.
  std::vector<StateTensor> zero_state_views() {
    full_m_.assign(params_.size(), 0.0f);
    full_v_.assign(params_.size(), 0.0f);
    std::vector<StateTensor> state = zero_muon_ ? zero_muon_->state() : std::vector<StateTensor>{};
    const std::vector<StateTensor> a = adamw_state(table_, full_m_.data(), full_v_.data());
    state.insert(state.end(), a.begin(), a.end());
    return state;
  }

  Config cfg_;
  const RunOptions& opt_;
  dist::Comm& comm_;
  ParamTable table_;
  dist::DataParallel dp_;
  std::vector<float> params_, grads_;
  std::unique_ptr<Optimizer> optimizer_;
  AdamW* zero_adamw_ = nullptr;  // the sharded AdamW under ZeRO-1
  Muon* zero_muon_ = nullptr;    // and the Muon beside it (whole state on every rank)
  std::vector<float> full_m_, full_v_;
  SpectralState spectral_;
  std::optional<CpuGpt<float>> model_;
  MoeStepStats moe_step_;
};

}  // namespace

std::unique_ptr<TrainEngine> make_cpu_engine(const Config& cfg, const RunOptions& opt, dist::Comm& comm) {
  return std::make_unique<CpuEngine>(cfg, opt, comm);
}

}  // namespace pg
