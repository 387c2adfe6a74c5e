#include "dist/data_parallel.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"

namespace pg::dist {

namespace {

int64_t round_up(int64_t x, int64_t g) { return (x + g - 1) / g * g; }

void to_bf16(const float* in, uint16_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = bf16_bits(in[i]);
}
void from_bf16(const uint16_t* in, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = bf16_value(in[i]);
}

}  // namespace

BucketLayout make_buckets(const ParamTable& table, int world_size, double bucket_mb) {
  PG_CHECK(world_size >= 1, "make_buckets: world_size must be >= 1");
  const int64_t g = 64 * int64_t(world_size);
  const int64_t target = std::max<int64_t>(1, int64_t(bucket_mb * 1048576.0 / sizeof(float)));
  BucketLayout out;
  out.padded_total = round_up(std::max<int64_t>(table.total(), 1), g);
  // Walk the tensors from the last to the first, cutting below a tensor once the open bucket
  // holds at least `target` elements.
  int64_t end = out.padded_total;
  const auto& entries = table.entries();
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    const int64_t cut = it->offset / g * g;
    if (end - cut >= target) {
      out.buckets.push_back({cut, end});
      end = cut;
    }
  }
  if (end > 0) out.buckets.push_back({0, end});
  return out;
}

DataParallel::DataParallel(Comm& comm, const ParamTable& table, const DistConfig& cfg, bool whole_grads)
    : comm_(&comm),
      zero_(cfg.zero == 1),
      whole_grads_(whole_grads),
      bf16_(cfg.grad_dtype == "bf16"),
      layout_(make_buckets(table, comm.world_size(), cfg.bucket_mb)) {
  const int W = world_size(), r = rank();
  if (zero_ && W > 1) {
    for (const Bucket& b : layout_.buckets) {
      const int64_t n = (b.end - b.begin) / W;
      owned_.push_back({b.begin + r * n, b.begin + (r + 1) * n});
    }
  } else {
    owned_.push_back({0, layout_.padded_total});
  }
  reduced_ = whole_grads_ ? std::vector<ElementRange>{{0, layout_.padded_total}} : owned_;
  if (bf16_ && W > 1) {
    int64_t longest = 0;
    for (const Bucket& b : layout_.buckets) longest = std::max(longest, b.end - b.begin);
    staging_.resize(size_t(longest));
  }
}

void DataParallel::broadcast_params(std::span<float> params) {
  if (world_size() > 1) comm_->broadcast(params, 0);
}

void DataParallel::reduce_grads(std::span<float> grads) {
  const int W = world_size();
  if (W == 1) return;  // one rank: its gradient is the global one, untouched (bitwise the serial path)
  PG_CHECK(int64_t(grads.size()) >= padded_total(), "reduce_grads: gradient buffer shorter than padded_total()");
  for (const Bucket& b : layout_.buckets) {
    float* g = grads.data() + b.begin;
    const int64_t len = b.end - b.begin, n = len / W;
    const bool all_reduce = !zero_ || whole_grads_;
    if (all_reduce && !bf16_) {
      comm_->all_reduce(g, len, DType::f32, ReduceOp::avg);
    } else if (all_reduce) {
      to_bf16(g, staging_.data(), len);
      comm_->all_reduce(staging_.data(), len, DType::bf16, ReduceOp::avg);
      from_bf16(staging_.data(), g, len);
    } else if (!bf16_) {
      comm_->reduce_scatter(g, g + rank() * n, n, DType::f32, ReduceOp::avg);
    } else {
      to_bf16(g, staging_.data(), len);
      uint16_t* part = staging_.data() + rank() * n;
      comm_->reduce_scatter(staging_.data(), part, n, DType::bf16, ReduceOp::avg);
      from_bf16(part, g + rank() * n, n);
    }
  }
}

double DataParallel::grad_norm(std::span<const float> grads) {
  double s = 0.0;
  for (const ElementRange& r : reduced_)
    for (int64_t i = r.begin; i < r.end; ++i) s += double(grads[size_t(i)]) * double(grads[size_t(i)]);
  if (zero_ && !whole_grads_ && world_size() > 1) comm_->all_reduce(std::span<double>(&s, 1), ReduceOp::sum);
  return std::sqrt(s);
}

void DataParallel::scale_grads(std::span<float> grads, float s) {
  for (const ElementRange& r : reduced_)
    for (int64_t i = r.begin; i < r.end; ++i) grads[size_t(i)] *= s;
}

void DataParallel::gather_params(std::span<float> params) {
  const int W = world_size();
  if (!zero_ || W == 1) return;
  for (const Bucket& b : layout_.buckets) {
    const int64_t n = (b.end - b.begin) / W;
    comm_->all_gather(params.data() + b.begin + rank() * n, params.data() + b.begin, n, DType::f32);
  }
}

void DataParallel::gather_state(std::span<const float> owned_state, std::span<float> full) {
  if (!zero_ || world_size() == 1) {
    std::copy(owned_state.begin(), owned_state.end(), full.begin());
    return;
  }
  int64_t base = 0;
  for (size_t k = 0; k < layout_.buckets.size(); ++k) {
    const Bucket& b = layout_.buckets[k];
    const int64_t n = owned_[k].size();
    comm_->all_gather(owned_state.data() + base, full.data() + b.begin, n, DType::f32);
    base += n;
  }
}

void DataParallel::scatter_state(std::span<const float> full, std::span<float> owned_state) const {
  int64_t base = 0;
  for (const ElementRange& r : owned_) {
    std::copy(full.begin() + r.begin, full.begin() + r.end, owned_state.begin() + base);
    base += r.size();
  }
}

}  // namespace pg::dist
