// Muon on the GPU (see cuda_muon.hpp; the math is muon.hpp's).
#include "optim/cuda_muon.hpp"

#include <algorithm>

#include <spdlog/fmt/fmt.h>

#include "core/error.hpp"
#include "dist/muon_split.hpp"
#include "kernels/muon.cuh"
#include "optim/muon.hpp"

namespace pg {
namespace {

int64_t round_up8(int64_t x) { return (x + 7) / 8 * 8; }  // CudaNewtonSchulz's member stride

// Every Muon matrix in table order, its owner among world_size ranks, and rank's share.
CudaMuon::Matrices muon_matrices(const ParamTable& table, int world_size, int rank) {
  CudaMuon::Matrices l;
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
  if (world_size > 1) {
    std::vector<dist::NsMatrix> ns;
    for (const MatrixShape& s : l.shapes) ns.push_back({s.rows, s.cols});
    l.owner = dist::assign_ns_work(ns, world_size);
  } else {
    l.owner.assign(l.shapes.size(), 0);
  }
  for (int i = 0; i < int(l.shapes.size()); ++i)
    if (l.owner[size_t(i)] == rank) {
      l.mine.push_back(i);
      l.local.push_back(l.local_size);
      l.local_size += int64_t(l.shapes[size_t(i)].rows) * l.shapes[size_t(i)].cols;
    }
  return l;
}

// Rank r's matrices grouped by wide shape as CudaNewtonSchulz groups them (first appearance,
// members in table order).
struct ShapeGroup {
  int m = 0, n = 0;
  std::vector<int> members;  // matrix indices
};
std::vector<ShapeGroup> shape_groups(const CudaMuon::Matrices& l, int r) {
  std::vector<ShapeGroup> out;
  for (int i = 0; i < int(l.shapes.size()); ++i) {
    if (l.owner[size_t(i)] != r) continue;
    const int m = std::min(l.shapes[size_t(i)].rows, l.shapes[size_t(i)].cols);
    const int n = std::max(l.shapes[size_t(i)].rows, l.shapes[size_t(i)].cols);
    auto it = std::find_if(out.begin(), out.end(), [&](const ShapeGroup& g) { return g.m == m && g.n == n; });
    if (it == out.end()) it = out.insert(out.end(), ShapeGroup{m, n, {}});
    it->members.push_back(i);
  }
  return out;
}

uint8_t matrix_flags(const CudaMuon::Matrices& l, int i) {
  const MatrixShape s = l.shapes[size_t(i)];
  return uint8_t((s.rows > s.cols ? kernels::kNsTall : 0) | (l.decays[size_t(i)] ? kernels::kMuonDecays : 0));
}

std::vector<MatrixShape> pick_shapes(const CudaMuon::Matrices& l) {
  std::vector<MatrixShape> out;
  for (int i : l.mine) out.push_back(l.shapes[size_t(i)]);
  return out;
}
std::vector<int64_t> pick_offsets(const CudaMuon::Matrices& l) {
  std::vector<int64_t> out;
  for (int i : l.mine) out.push_back(l.param_offsets[size_t(i)]);
  return out;
}

// L: the longest rank's share of NS results in the exchange buffer (elements, a multiple of 8).
int64_t slot_length(const CudaMuon::Matrices& l, int world_size) {
  int64_t longest = 8;
  for (int r = 0; r < world_size; ++r) {
    int64_t len = 0;
    for (const ShapeGroup& g : shape_groups(l, r)) len += int64_t(g.members.size()) * round_up8(int64_t(g.m) * g.n);
    longest = std::max(longest, len);
  }
  return longest;
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

size_t CudaMuon::state_bytes(const OptimConfig& cfg, const ParamTable& table, int world_size, int rank) {
  const size_t elem = parse_ns_precision(cfg.ns_precision, "optim.ns_precision") == NsPrecision::fp32 ? 4 : 2;
  const Matrices l = muon_matrices(table, world_size, rank);
  size_t bytes = 0;
  for (int i : l.mine) {
    const MatrixShape s = l.shapes[size_t(i)];
    const size_t m = size_t(std::min(s.rows, s.cols)), n = size_t(std::max(s.rows, s.cols));
    // momentum + the fp32 NS input, the two X buffers and the two [m, m] products
    bytes += 2 * sizeof(float) * m * n + 2 * elem * m * n + 2 * elem * m * m;
  }
  if (world_size > 1) bytes += size_t(world_size) * size_t(slot_length(l, world_size)) * elem;  // exchange
  return bytes;
}

CudaMuon::CudaMuon(const OptimConfig& cfg, const ParamTable& table, cudaStream_t stream, const CudaOptimizerDist& dist)
    : cfg_(cfg),
      table_(&table),
      stream_(stream),
      dist_(dist),
      safety_(checked_safety(cfg)),
      mats_(muon_matrices(table, dist.world_size(), dist.rank())),
      ns_(pick_shapes(mats_), pick_offsets(mats_), ns_schedule(cfg.ns_schedule, cfg.ns_steps, safety_),
          parse_ns_precision(cfg.ns_precision, "optim.ns_precision"), safety_, stream) {
  const int W = dist.world_size(), me = dist.rank();
  PG_CHECK(W == 1 || (dist.comm_stream && dist.scratch), "CudaMuon: several ranks need the comm stream and scratch");
  int64_t state_offset = 0;
  for (int i = 0; i < int(table.entries().size()); ++i) {
    if (!table.at(i).muon) continue;
    tensors_.push_back({i, state_offset});
    state_offset += table.at(i).numel;
  }
  momentum_ = cuda::DeviceBuffer<float>(size_t(mats_.local_size));
  momentum_.zero(stream_);
  host_.assign(size_t(mats_.state_size), 0.0f);
  // ns_ indexes mats_.mine; the momentum kernels take each member's place in momentum_.
  for (const auto& g : ns_.groups()) {
    std::vector<int64_t> state_offsets;
    std::vector<uint8_t> flags;
    for (size_t k = 0; k < g.members.size(); ++k) {
      const int j = g.members[k];
      state_offsets.push_back(mats_.local[size_t(j)]);
      flags.push_back(matrix_flags(mats_, mats_.mine[size_t(j)]));
    }
    group_args_.push_back({cuda::DeviceBuffer<int64_t>(std::span<const int64_t>(state_offsets)),
                           cuda::DeviceBuffer<uint8_t>(std::span<const uint8_t>(flags))});
  }
  // Runs of consecutive matrices with one owner, contiguous in both layouts (one run on one rank).
  std::vector<int64_t> local_of(mats_.shapes.size(), -1);
  for (size_t k = 0; k < mats_.mine.size(); ++k) local_of[size_t(mats_.mine[k])] = mats_.local[k];
  for (int i = 0; i < int(mats_.shapes.size()); ++i) {
    const int64_t n = int64_t(mats_.shapes[size_t(i)].rows) * mats_.shapes[size_t(i)].cols;
    const int owner = mats_.owner[size_t(i)];
    const int64_t local = local_of[size_t(i)];
    Copy* last = copies_.empty() ? nullptr : &copies_.back();
    if (last && last->owner == owner && last->full + last->n == mats_.state_offsets[size_t(i)] &&
        (local < 0 || last->local + last->n == local))
      last->n += n;
    else
      copies_.push_back({mats_.state_offsets[size_t(i)], local, n, owner});
  }
  if (W > 1) {
    slot_len_ = slot_length(mats_, W);
    const size_t elem = ns_.precision() == NsPrecision::fp32 ? 4 : 2;
    exchange_ = cuda::DeviceBuffer<std::byte>(size_t(W) * size_t(slot_len_) * elem);
    for (int r = 0; r < W; ++r) {
      int64_t at = int64_t(r) * slot_len_;
      const std::vector<ShapeGroup> groups = shape_groups(mats_, r);
      if (r == me) PG_CHECK(groups.size() == ns_.groups().size(), "CudaMuon: shape groups differ from NS's");
      for (size_t gi = 0; gi < groups.size(); ++gi) {
        const ShapeGroup& g = groups[gi];
        Slot s;
        s.count = int(g.members.size()), s.m = g.m, s.n = g.n, s.stride = round_up8(int64_t(g.m) * g.n), s.at = at;
        if (r == me) {
          PG_CHECK(ns_.groups()[gi].m == g.m && ns_.groups()[gi].n == g.n && ns_.groups()[gi].stride == s.stride &&
                       int(ns_.groups()[gi].members.size()) == s.count,
                   "CudaMuon: shape group differs from NS's");
          my_at_.push_back(at);
        }
        std::vector<int64_t> offs;
        std::vector<uint8_t> flags;
        for (int i : g.members) offs.push_back(mats_.param_offsets[size_t(i)]), flags.push_back(matrix_flags(mats_, i));
        s.param_offsets = cuda::DeviceBuffer<int64_t>(std::span<const int64_t>(offs));
        s.flags = cuda::DeviceBuffer<uint8_t>(std::span<const uint8_t>(flags));
        at += int64_t(s.count) * s.stride;
        slots_.push_back(std::move(s));
      }
    }
  }
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

size_t CudaMuon::device_bytes() const {
  size_t bytes = momentum_.bytes() + exchange_.bytes();
  for (const auto& g : ns_.groups()) bytes += g.in.bytes() + g.x.bytes() + g.y.bytes() + g.a.bytes() + g.b.bytes();
  return bytes;
}

void CudaMuon::update(const kernels::NsBatch& b, const std::byte* ortho, const int64_t* offs, const uint8_t* flags,
                      float* params, kernels::bf16* params_bf16, const kernels::MuonUpdate& u) {
  switch (ns_.precision()) {
    case NsPrecision::bf16:
      kernels::muon_update(b, reinterpret_cast<const kernels::bf16*>(ortho), offs, flags, params, params_bf16, u,
                           stream_);
      break;
    case NsPrecision::fp16:
      kernels::muon_update(b, reinterpret_cast<const kernels::f16*>(ortho), offs, flags, params, params_bf16, u,
                           stream_);
      break;
    case NsPrecision::fp32:
      kernels::muon_update(b, reinterpret_cast<const float*>(ortho), offs, flags, params, params_bf16, u, stream_);
      break;
  }
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
  auto constants = [&](int m, int n) {
    kernels::MuonUpdate u;
    u.decay = float(1.0 - lr * cfg_.weight_decay);
    u.step_wide = float(lr * muon_update_scale(cfg_.muon_scale, m, n));
    u.step_tall = float(lr * muon_update_scale(cfg_.muon_scale, n, m));
    return u;
  };
  if (dist_.world_size() == 1) {
    for (size_t gi = 0; gi < groups.size(); ++gi) {
      auto& g = groups[gi];
      update(g.batch(), static_cast<const std::byte*>(g.result), g.offsets.data(), group_args_[gi].flags.data(),
             params, params_bf16, constants(g.m, g.n));
    }
    return;
  }
  // This rank's results into its slot; every slot to every rank; every matrix updated from its slot.
  const size_t elem = ns_.precision() == NsPrecision::fp32 ? 4 : 2;
  std::byte* x = exchange_.data();
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    const auto& g = groups[gi];
    CUDA_CHECK(cudaMemcpyAsync(x + size_t(my_at_[gi]) * elem, g.result, g.members.size() * size_t(g.stride) * elem,
                               cudaMemcpyDeviceToDevice, stream_));
  }
  stream_wait(dist_.comm_stream, stream_, ready_.get());
  dist_.comm->all_gather(x + size_t(dist_.rank()) * size_t(slot_len_) * elem, x, slot_len_,
                         elem == 4 ? dist::DType::f32 : dist::DType::bf16);  // 2-byte types as raw bits
  stream_wait(stream_, dist_.comm_stream, gathered_.get());
  for (const Slot& s : slots_)
    update({s.count, s.m, s.n, s.stride}, x + size_t(s.at) * elem, s.param_offsets.data(), s.flags.data(), params,
           params_bf16, constants(s.m, s.n));
}

std::vector<StateTensor> CudaMuon::download_state() {
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (dist_.world_size() == 1) {
    if (!host_.empty()) CUDA_CHECK(cudaMemcpy(host_.data(), momentum_.data(), momentum_.bytes(), cudaMemcpyDeviceToHost));
    return host_state();
  }
  // Each rank's momentum to its flat offsets in scratch, each run broadcast from its owner.
  const cudaStream_t cs = dist_.comm_stream;
  CUDA_CHECK(cudaStreamSynchronize(cs));
  for (const Copy& c : copies_)
    if (c.owner == dist_.rank())
      CUDA_CHECK(cudaMemcpyAsync(dist_.scratch + c.full, momentum_.data() + c.local, size_t(c.n) * sizeof(float),
                                 cudaMemcpyDeviceToDevice, cs));
  for (const Copy& c : copies_) dist_.comm->broadcast(dist_.scratch + c.full, c.n, dist::DType::f32, c.owner);
  CUDA_CHECK(cudaStreamSynchronize(cs));
  if (!host_.empty())
    CUDA_CHECK(cudaMemcpy(host_.data(), dist_.scratch, host_.size() * sizeof(float), cudaMemcpyDeviceToHost));
  return host_state();
}

std::vector<StateTensor> CudaMuon::host_state() {
  std::vector<StateTensor> out;
  for (const Tensor& x : tensors_) {
    const ParamInfo& p = table_->at(x.index);
    out.push_back({p.name + ".momentum_buffer", p.shape, host_.data() + x.state_offset, p.numel});
  }
  return out;
}

void CudaMuon::upload_state() {
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  for (const Copy& c : copies_)
    if (c.owner == dist_.rank())
      CUDA_CHECK(cudaMemcpy(momentum_.data() + c.local, host_.data() + c.full, size_t(c.n) * sizeof(float),
                            cudaMemcpyHostToDevice));
}

std::vector<std::string> CudaMuon::describe() const {
  int64_t n = 0;
  for (const Tensor& x : tensors_) n += table_->at(x.index).numel;
  std::string groups;
  for (const auto& g : ns_.groups())
    groups += fmt::format("{}{} x {}x{}", groups.empty() ? "" : ", ", g.members.size(), g.m, g.n);
  std::string split;
  if (dist_.world_size() > 1) {
    double mine = 0, total = 0;
    for (size_t i = 0; i < mats_.shapes.size(); ++i) {
      const double f = dist::ns_flops_per_iteration({mats_.shapes[i].rows, mats_.shapes[i].cols});
      total += f;
      if (mats_.owner[i] == dist_.rank()) mine += f;
    }
    split = fmt::format("; NS split over {} ranks: this rank orthogonalises {} of {} matrices ({:.1f}% of the FLOPs) "
                        "and keeps their momentum, results all-gathered",
                        dist_.world_size(), mats_.mine.size(), mats_.shapes.size(), total > 0 ? 100.0 * mine / total : 0.0);
  }
  return {fmt::format(
      "muon (cuda): {} tensors, {} matrices, {} parameters (lr {:g}, momentum {:g}{}, scale {}, NS {} x{} {}, "
      "batched by shape); {} shape groups: {}{}",
      tensors_.size(), mats_.shapes.size(), n, cfg_.muon_lr, cfg_.muon_momentum, cfg_.muon_nesterov ? " nesterov" : "",
      cfg_.muon_scale, cfg_.ns_schedule, cfg_.ns_steps, cfg_.ns_precision, ns_.groups().size(),
      groups.empty() ? "none" : groups, split)};
}

}  // namespace pg
