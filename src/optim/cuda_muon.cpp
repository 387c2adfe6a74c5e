// Muon on the GPU (see cuda_muon.hpp; the math is muon.hpp's).
#include "optim/cuda_muon.hpp"

#include <algorithm>

#include <spdlog/fmt/fmt.h>

#include "core/error.hpp"
#include "kernels/muon.cuh"
#include "optim/muon.hpp"

namespace pg {
namespace {

// Every Muon matrix (an expert of a 3-D tensor is one), in table order, as Muon lists them.
struct MatrixList {
  std::vector<MatrixShape> shapes;
  std::vector<int64_t> param_offsets, state_offsets;
  std::vector<bool> decays;
  int64_t state_size = 0;
};

MatrixList muon_matrices(const ParamTable& table) {
  MatrixList l;
  for (const auto& p : table.entries()) {
    if (!p.muon) continue;
    PG_CHECK(p.is_matrix(), "CudaMuon: " + p.name + " is not a matrix");
    const int64_t rows = p.rows(), cols = p.cols(), per = rows * cols;
    for (int64_t e = 0; e < p.numel / per; ++e) {
      l.shapes.push_back({int(rows), int(cols)});
      l.param_offsets.push_back(p.offset + e * per);
      l.state_offsets.push_back(l.state_size + e * per);
      l.decays.push_back(p.weight_decay);
    }
    l.state_size += p.numel;
  }
  return l;
}

// Validates the settings as Muon does; returns the NS safety (1.02 at fp16, else 1.01).
double checked_safety(const OptimConfig& cfg) {
  const NsPrecision prec = parse_ns_precision(cfg.ns_precision, "optim.ns_precision");
  if (!(cfg.muon_momentum >= 0.0 && cfg.muon_momentum < 1.0))
    throw UserError("optim.muon_momentum: expected a value in [0, 1), got " + fmt::format("{}", cfg.muon_momentum));
  if (!(cfg.muon_lr > 0.0)) throw UserError("optim.muon_lr: expected a value > 0, got " + fmt::format("{}", cfg.muon_lr));
  muon_update_scale(cfg.muon_scale, 1, 1);  // validates the rule name
  return muon_ns_safety(prec);
}

}  // namespace

size_t CudaMuon::device_bytes(const OptimConfig& cfg, const ParamTable& table) {
  const size_t elem = parse_ns_precision(cfg.ns_precision, "optim.ns_precision") == NsPrecision::fp32 ? 4 : 2;
  size_t bytes = 0;
  for (const MatrixShape& s : muon_matrices(table).shapes) {
    const size_t m = size_t(std::min(s.rows, s.cols)), n = size_t(std::max(s.rows, s.cols));
    // momentum + the fp32 NS input, the two X buffers and the two [m, m] products
    bytes += 2 * sizeof(float) * m * n + 2 * elem * m * n + 2 * elem * m * m;
  }
  return bytes;
}

CudaMuon::CudaMuon(const OptimConfig& cfg, const ParamTable& table, cudaStream_t stream)
    : cfg_(cfg),
      table_(&table),
      stream_(stream),
      safety_(checked_safety(cfg)),
      ns_(muon_matrices(table).shapes, muon_matrices(table).param_offsets,
          ns_schedule(cfg.ns_schedule, cfg.ns_steps, safety_), parse_ns_precision(cfg.ns_precision, "optim.ns_precision"),
          safety_, stream) {
  const MatrixList l = muon_matrices(table);
  n_matrices_ = int64_t(l.shapes.size());
  int64_t state_offset = 0;
  for (int i = 0; i < int(table.entries().size()); ++i) {
    if (!table.at(i).muon) continue;
    tensors_.push_back({i, state_offset});
    state_offset += table.at(i).numel;
  }
  momentum_ = cuda::DeviceBuffer<float>(size_t(l.state_size));
  momentum_.zero(stream_);
  host_.assign(size_t(l.state_size), 0.0f);
  for (const auto& g : ns_.groups()) {
    std::vector<int64_t> state_offsets;
    std::vector<uint8_t> flags;
    for (size_t k = 0; k < g.members.size(); ++k) {
      const int i = g.members[k];
      state_offsets.push_back(l.state_offsets[size_t(i)]);
      flags.push_back(uint8_t(g.flags[k] | (l.decays[size_t(i)] ? kernels::kMuonDecays : 0)));
    }
    group_args_.push_back({cuda::DeviceBuffer<int64_t>(std::span<const int64_t>(state_offsets)),
                           cuda::DeviceBuffer<uint8_t>(std::span<const uint8_t>(flags))});
  }
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaMuon::step(float* params, kernels::bf16* params_bf16, const float* grads, float grad_scale,
                    double lr_factor, int64_t /*t*/) {
  auto& groups = ns_.groups();
  const float mu = float(cfg_.muon_momentum);
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    auto& g = groups[gi];
    kernels::muon_momentum(g.batch(), g.offsets.data(), group_args_[gi].state_offsets.data(),
                           group_args_[gi].flags.data(), grads, grad_scale, momentum_.data(), mu, cfg_.muon_nesterov,
                           g.in.data(), g.partial.data(), stream_);
  }
  ns_.orthogonalise();
  // The same float constants as the CPU Muon: decay and step rounded from double once.
  const double lr = cfg_.muon_lr * lr_factor;
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    auto& g = groups[gi];
    kernels::MuonUpdate u;
    u.decay = float(1.0 - lr * cfg_.weight_decay);
    u.step_wide = float(lr * muon_update_scale(cfg_.muon_scale, g.m, g.n));
    u.step_tall = float(lr * muon_update_scale(cfg_.muon_scale, g.n, g.m));
    const int64_t* offs = g.offsets.data();
    const uint8_t* flags = group_args_[gi].flags.data();
    switch (ns_.precision()) {
      case NsPrecision::bf16:
        kernels::muon_update(g.batch(), static_cast<const kernels::bf16*>(g.result), offs, flags, params, params_bf16,
                             u, stream_);
        break;
      case NsPrecision::fp16:
        kernels::muon_update(g.batch(), static_cast<const kernels::f16*>(g.result), offs, flags, params, params_bf16,
                             u, stream_);
        break;
      case NsPrecision::fp32:
        kernels::muon_update(g.batch(), static_cast<const float*>(g.result), offs, flags, params, params_bf16, u,
                             stream_);
        break;
    }
  }
}

std::vector<StateTensor> CudaMuon::download_state() {
  if (!host_.empty())
    CUDA_CHECK(cudaMemcpyAsync(host_.data(), momentum_.data(), momentum_.bytes(), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  std::vector<StateTensor> out;
  for (const Tensor& x : tensors_) {
    const ParamInfo& p = table_->at(x.index);
    out.push_back({p.name + ".momentum_buffer", p.shape, host_.data() + x.state_offset, p.numel});
  }
  return out;
}

void CudaMuon::upload_state() {
  if (!host_.empty())
    CUDA_CHECK(cudaMemcpyAsync(momentum_.data(), host_.data(), momentum_.bytes(), cudaMemcpyHostToDevice, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

std::vector<std::string> CudaMuon::describe() const {
  int64_t n = 0;
  for (const Tensor& x : tensors_) n += table_->at(x.index).numel;
  std::string groups;
  for (const auto& g : ns_.groups())
    groups += fmt::format("{}{} x {}x{}", groups.empty() ? "" : ", ", g.members.size(), g.m, g.n);
  return {fmt::format(
      "muon (cuda): {} tensors, {} matrices, {} parameters (lr {:g}, momentum {:g}{}, scale {}, NS {} x{} {}, "
      "batched by shape); {} shape groups: {}",
      tensors_.size(), n_matrices_, n, cfg_.muon_lr, cfg_.muon_momentum, cfg_.muon_nesterov ? " nesterov" : "",
      cfg_.muon_scale, cfg_.ns_schedule, cfg_.ns_steps, cfg_.ns_precision, ns_.groups().size(),
      groups.empty() ? "none" : groups)};
}

}  // namespace pg
