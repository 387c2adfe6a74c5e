// AdamW on the GPU and make_cuda_optimizer (cuda_adamw.hpp, cuda_optimizer.hpp).
#include "optim/cuda_adamw.hpp"

#include <algorithm>

#include <spdlog/fmt/fmt.h>

#include "core/error.hpp"
#include "kernels/adamw.cuh"
#include "optim/adamw.hpp"
#include "optim/cuda_muon.hpp"

namespace pg {

namespace {

std::vector<ElementRange> owned_ranges(const ParamTable& table, const CudaOptimizerDist& dist) {
  if (dist.world_size() > 1 && !dist.adamw_owned.empty()) return dist.adamw_owned;
  return {{0, table.total()}};
}

int64_t total_size(const std::vector<ElementRange>& ranges) {
  int64_t n = 0;
  for (const ElementRange& r : ranges) n += r.size();
  return n;
}

}  // namespace

size_t CudaAdamW::state_bytes(const ParamTable& table, const CudaOptimizerDist& dist) {
  return 2 * sizeof(float) * size_t(total_size(owned_ranges(table, dist)));
}

CudaAdamW::CudaAdamW(const OptimConfig& cfg, const ParamTable& table, cudaStream_t stream,
                     const CudaOptimizerDist& dist)
    : cfg_(cfg),
      table_(&table),
      stream_(stream),
      dist_(dist),
      sharded_(dist.world_size() > 1 && !dist.adamw_owned.empty()),
      owned_(owned_ranges(table, dist)),
      m_(size_t(total_size(owned_))),
      v_(size_t(total_size(owned_))) {
  PG_CHECK(!sharded_ || (dist.scratch && dist.comm_stream && dist.buckets.size() == owned_.size()),
           "CudaAdamW: ZeRO-1 needs the comm stream, the buckets and a scratch buffer");
  // Runs of consecutive AdamW tensors that share the decay flag, over the flat buffer ...
  std::vector<Run> flat;
  const auto& e = table.entries();
  for (size_t i = 0; i < e.size(); ++i) {
    const ParamInfo& p = e[i];
    if (p.muon) continue;
    if (i > 0 && !e[i - 1].muon && flat.back().decay == p.weight_decay)
      flat.back().end = p.offset + p.numel;  // extends the run of the tensor just before
    else
      flat.push_back({p.offset, p.offset + p.numel, p.weight_decay, 0});
  }
  // ... cut to the owned ranges, each with its moments' place in the compact layout.
  int64_t base = 0;
  for (const ElementRange& r : owned_) {
    for (const Run& f : flat) {
      const int64_t lo = std::max(r.begin, f.begin), hi = std::min(r.end, f.end);
      if (lo < hi) runs_.push_back({lo, hi, f.decay, base + (lo - r.begin)});
    }
    base += r.size();
  }
  int64_t full = table.total();
  for (const ElementRange& r : owned_) full = std::max(full, r.end);
  host_m_.assign(size_t(full), 0.0f);
  host_v_.assign(size_t(full), 0.0f);
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
                          m_.data() + r.state, v_.data() + r.state, r.end - r.begin, s, r.decay, stream_);
}

// compact moments (this rank's parts) -> every rank's parts in the scratch buffer at their flat
// offsets (one all-gather per bucket) -> full, on the host.
void CudaAdamW::gather(const float* compact, std::vector<float>& full) {
  stream_wait(dist_.comm_stream, stream_, ready_.get());
  int64_t base = 0;
  for (size_t k = 0; k < owned_.size(); ++k) {
    const int64_t n = owned_[k].size();
    dist_.comm->all_gather(compact + base, dist_.scratch + dist_.buckets[k].begin, n, dist::DType::f32);
    base += n;
  }
  CUDA_CHECK(cudaStreamSynchronize(dist_.comm_stream));
  CUDA_CHECK(cudaMemcpy(full.data(), dist_.scratch, full.size() * sizeof(float), cudaMemcpyDeviceToHost));
}

std::vector<StateTensor> CudaAdamW::download_state() {
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (sharded_) {
    gather(m_.data(), host_m_);
    gather(v_.data(), host_v_);
  } else {
    CUDA_CHECK(cudaMemcpy(host_m_.data(), m_.data(), m_.bytes(), cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(host_v_.data(), v_.data(), v_.bytes(), cudaMemcpyDeviceToHost));
  }
  return host_state();
}

std::vector<StateTensor> CudaAdamW::host_state() { return adamw_state(*table_, host_m_.data(), host_v_.data()); }

void CudaAdamW::upload_state() {
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  int64_t base = 0;
  for (const ElementRange& r : owned_) {
    const size_t bytes = size_t(r.size()) * sizeof(float);
    CUDA_CHECK(cudaMemcpy(m_.data() + base, host_m_.data() + r.begin, bytes, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(v_.data() + base, host_v_.data() + r.begin, bytes, cudaMemcpyHostToDevice));
    base += r.size();
  }
}

std::vector<std::string> CudaAdamW::describe() const {
  int tensors = 0;
  int64_t n = 0;
  for (const auto& p : table_->entries())
    if (!p.muon) ++tensors, n += p.numel;
  return {fmt::format("adamw (cuda): {} tensors, {} parameters in {} kernel calls (lr {:g}, betas {:g}/{:g}, "
                      "weight decay {:g}){}",
                      tensors, n, runs_.size(), cfg_.lr, cfg_.beta1, cfg_.beta2, cfg_.weight_decay,
                      sharded_ ? fmt::format("; ZeRO-1: moments for this rank's {} of {} elements", m_.size(),
                                             table_->total())
                               : "")};
}

size_t cuda_optimizer_state_bytes(const OptimConfig& cfg, const ParamTable& table, const CudaOptimizerDist& dist) {
  // AdamW's m and v over its ranges; Muon's momentum (its share of the matrices) and its
  // Newton-Schulz workspace (CudaMuon::state_bytes).
  size_t bytes = CudaAdamW::state_bytes(table, dist);
  if (cfg.kind == "muon") bytes += CudaMuon::state_bytes(cfg, table, dist.world_size(), dist.rank());
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
  std::vector<StateTensor> host_state() override {
    std::vector<StateTensor> out;
    for (auto& p : parts_) {
      auto s = p->host_state();
      out.insert(out.end(), s.begin(), s.end());
    }
    return out;
  }
  void upload_state() override {
    for (auto& p : parts_) p->upload_state();
  }
  size_t device_bytes() const override {
    size_t n = 0;
    for (const auto& p : parts_) n += p->device_bytes();
    return n;
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
                                                   cudaStream_t stream, const CudaOptimizerDist& dist) {
  if (cfg.kind != "muon") return std::make_unique<CudaAdamW>(cfg, table, stream, dist);
  std::vector<std::unique_ptr<CudaOptimizer>> parts;
  parts.push_back(std::make_unique<CudaMuon>(cfg, table, stream, dist));
  parts.push_back(std::make_unique<CudaAdamW>(cfg, table, stream, dist));
  return std::make_unique<CudaComposite>(std::move(parts));
}

}  // namespace pg
