// AdamW on the GPU and make_cuda_optimizer (cuda_adamw.hpp, cuda_optimizer.hpp).
#include "optim/cuda_adamw.hpp"

#include <spdlog/fmt/fmt.h>

#include "core/error.hpp"
#include "kernels/adamw.cuh"
#include "optim/adamw.hpp"
#include "optim/cuda_muon.hpp"

namespace pg {

CudaAdamW::CudaAdamW(const OptimConfig& cfg, const ParamTable& table, cudaStream_t stream)
    : cfg_(cfg), table_(&table), stream_(stream), m_(size_t(table.total())), v_(size_t(table.total())) {
  const auto& e = table.entries();
  for (size_t i = 0; i < e.size(); ++i) {
    const ParamInfo& p = e[i];
    if (p.muon) continue;
    if (i > 0 && !e[i - 1].muon && runs_.back().decay == p.weight_decay)
      runs_.back().end = p.offset + p.numel;  // extends the run of the tensor just before
    else
      runs_.push_back({p.offset, p.offset + p.numel, p.weight_decay});
  }
  m_.zero(stream_);
  v_.zero(stream_);
}

void CudaAdamW::step(float* params, kernels::bf16* params_bf16, const float* grads, float grad_scale, double lr_factor,
                     int64_t t) {
  kernels::AdamWStep s;
  s.lr = float(cfg_.lr * lr_factor), s.beta1 = float(cfg_.beta1), s.beta2 = float(cfg_.beta2);
  s.eps = float(cfg_.eps), s.weight_decay = float(cfg_.weight_decay), s.t = t, s.grad_scale = grad_scale;
  for (const Run& r : runs_)
    kernels::adamw_update(params + r.begin, params_bf16 ? params_bf16 + r.begin : nullptr, grads + r.begin,
                          m_.data() + r.begin, v_.data() + r.begin, r.end - r.begin, s, r.decay, stream_);
}

std::vector<StateTensor> CudaAdamW::download_state() {
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  host_m_ = m_.download();
  host_v_ = v_.download();
  return adamw_state(*table_, host_m_.data(), host_v_.data());
}

void CudaAdamW::upload_state() {
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  m_.upload(host_m_);
  v_.upload(host_v_);
}

std::vector<std::string> CudaAdamW::describe() const {
  int tensors = 0;
  int64_t n = 0;
  for (const auto& p : table_->entries())
    if (!p.muon) ++tensors, n += p.numel;
  return {fmt::format("adamw (cuda): {} tensors, {} parameters in {} kernel calls (lr {:g}, betas {:g}/{:g}, "
                      "weight decay {:g})",
                      tensors, n, runs_.size(), cfg_.lr, cfg_.beta1, cfg_.beta2, cfg_.weight_decay)};
}

size_t cuda_optimizer_state_bytes(const OptimConfig& cfg, const ParamTable& table) {
  // AdamW's m and v over the flat buffer; Muon's momentum (its tensors only) and its Newton-Schulz
  // workspace, which CudaMuon allocates at construction (counted there: CudaMuon::device_bytes).
  size_t bytes = 2 * sizeof(float) * size_t(table.total());
  if (cfg.kind == "muon") bytes += CudaMuon::device_bytes(cfg, table);
  return bytes;
}

namespace {

// optim.kind = muon: CudaMuon on the muon-flagged tensors, CudaAdamW on the others, one schedule.
class CudaComposite final : public CudaOptimizer {
 public:
  explicit CudaComposite(std::vector<std::unique_ptr<CudaOptimizer>> parts) : parts_(std::move(parts)) {}
  void step(float* params, kernels::bf16* params_bf16, const float* grads, float grad_scale, double lr_factor,
            int64_t t) override {
    for (auto& p : parts_) p->step(params, params_bf16, grads, grad_scale, lr_factor, t);
  }
  std::vector<StateTensor> download_state() override {
    std::vector<StateTensor> out;
    for (auto& p : parts_) {
      auto s = p->download_state();
      out.insert(out.end(), s.begin(), s.end());
    }
    return out;
  }
  void upload_state() override {
    for (auto& p : parts_) p->upload_state();
  }
  std::vector<std::string> describe() const override {
    std::vector<std::string> out;
    for (const auto& p : parts_) {
      auto d = p->describe();
      out.insert(out.end(), d.begin(), d.end());
    }
    return out;
  }

 private:
  std::vector<std::unique_ptr<CudaOptimizer>> parts_;
};

}  // namespace

std::unique_ptr<CudaOptimizer> make_cuda_optimizer(const OptimConfig& cfg, const ParamTable& table,
                                                   cudaStream_t stream) {
  if (cfg.kind != "muon") return std::make_unique<CudaAdamW>(cfg, table, stream);
  std::vector<std::unique_ptr<CudaOptimizer>> parts;
  parts.push_back(std::make_unique<CudaMuon>(cfg, table, stream));
  parts.push_back(std::make_unique<CudaAdamW>(cfg, table, stream));
  return std::make_unique<CudaComposite>(std::move(parts));
}

}  // namespace pg
