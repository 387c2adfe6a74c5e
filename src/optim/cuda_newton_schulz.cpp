// Grouped, batched Newton-Schulz on the GPU (see cuda_newton_schulz.hpp).
#include "optim/cuda_newton_schulz.hpp"

#include <algorithm>
#include <utility>

#include "core/error.hpp"

namespace pg {
namespace {

int64_t round_up8(int64_t x) { return (x + 7) / 8 * 8; }  // 16-byte aligned starts at 2 bytes/element

size_t element_bytes(NsPrecision p) { return p == NsPrecision::fp32 ? 4 : 2; }

cuda::InType in_type(NsPrecision p) {
  switch (p) {
    case NsPrecision::bf16: return cuda::InType::BF16;
    case NsPrecision::fp16: return cuda::InType::F16;
    case NsPrecision::fp32: return cuda::InType::F32;
  }
  return cuda::InType::BF16;
}
cuda::OutType out_type(NsPrecision p) {
  switch (p) {
    case NsPrecision::bf16: return cuda::OutType::BF16;
    case NsPrecision::fp16: return cuda::OutType::F16;
    case NsPrecision::fp32: return cuda::OutType::F32;
  }
  return cuda::OutType::BF16;
}

}  // namespace

CudaNewtonSchulz::CudaNewtonSchulz(std::span<const MatrixShape> shapes, std::span<const int64_t> offsets,
                                   std::vector<NsCoeffs> schedule, NsPrecision precision, double safety,
                                   cudaStream_t stream, bool batched, bool symmetric)
    : schedule_(std::move(schedule)),
      precision_(precision),
      safety_(safety),
      stream_(stream),
      batched_(batched),
      symmetric_(symmetric),
      elem_(element_bytes(precision)),
      gemm_(stream) {
  PG_CHECK(shapes.size() == offsets.size(), "CudaNewtonSchulz: one offset per matrix expected");
  std::vector<std::vector<int64_t>> member_offsets;
  for (int i = 0; i < int(shapes.size()); ++i) {
    const auto [rows, cols] = shapes[size_t(i)];
    PG_CHECK(rows > 0 && cols > 0, "CudaNewtonSchulz: empty matrix");
    const int m = std::min(rows, cols), n = std::max(rows, cols);
    auto it = std::find_if(groups_.begin(), groups_.end(), [&](const Group& g) { return g.m == m && g.n == n; });
    if (it == groups_.end()) {
      groups_.emplace_back();
      groups_.back().m = m, groups_.back().n = n;
      member_offsets.emplace_back();
      it = groups_.end() - 1;
    }
    it->members.push_back(i);
    it->flags.push_back(rows > cols ? kernels::kNsTall : uint8_t(0));
    member_offsets[size_t(it - groups_.begin())].push_back(offsets[size_t(i)]);
  }
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    Group& g = groups_[gi];
    const size_t count = g.members.size();
    // Split X X^T needs h = m/2 a multiple of 8 (16-byte aligned blocks) and unpadded X strides.
    g.split = symmetric_ && g.m % 16 == 0;
    g.stride = round_up8(int64_t(g.m) * g.n);
    g.stride_mm = g.split ? int64_t(g.m) * g.m + g.m : round_up8(int64_t(g.m) * g.m);
    g.offsets = cuda::DeviceBuffer<int64_t>(std::span<const int64_t>(member_offsets[gi]));
    g.flags_dev = cuda::DeviceBuffer<uint8_t>(std::span<const uint8_t>(g.flags));
    g.in = cuda::DeviceBuffer<float>(count * size_t(g.stride));
    g.partial = cuda::DeviceBuffer<float>(count * size_t(kernels::ns_tiles(g.m, g.n)));
    g.scale = cuda::DeviceBuffer<float>(count);
    g.x = cuda::DeviceBuffer<std::byte>(count * size_t(g.stride) * elem_);
    g.y = cuda::DeviceBuffer<std::byte>(count * size_t(g.stride) * elem_);
    g.a = cuda::DeviceBuffer<std::byte>(count * size_t(g.stride_mm) * elem_);
    g.b = cuda::DeviceBuffer<std::byte>(count * size_t(g.stride_mm) * elem_);
  }
}

void CudaNewtonSchulz::run(float* base) {
  for (Group& g : groups_)
    kernels::ns_gather(g.batch(), base, g.offsets.data(), g.flags_dev.data(), g.in.data(), g.partial.data(), stream_);
  orthogonalise();
  for (Group& g : groups_) {
    const kernels::NsBatch b = g.batch();
    switch (precision_) {
      case NsPrecision::bf16:
        kernels::ns_scatter(b, static_cast<const kernels::bf16*>(g.result), g.offsets.data(), g.flags_dev.data(),
                            base, stream_);
        break;
      case NsPrecision::fp16:
        kernels::ns_scatter(b, static_cast<const kernels::f16*>(g.result), g.offsets.data(), g.flags_dev.data(),
                            base, stream_);
        break;
      case NsPrecision::fp32:
        kernels::ns_scatter(b, static_cast<const float*>(g.result), g.offsets.data(), g.flags_dev.data(), base,
                            stream_);
        break;
    }
  }
}

void CudaNewtonSchulz::orthogonalise() {
  for (Group& g : groups_) {
    const kernels::NsBatch b = g.batch();
    // X = T(D / (||D||_F · safety + eps)), eps as on the CPU
    kernels::ns_scale(b, g.partial.data(), safety_, 1e-7, g.scale.data(), stream_);
    switch (precision_) {
      case NsPrecision::bf16:
        kernels::ns_normalise(b, g.in.data(), g.scale.data(), reinterpret_cast<kernels::bf16*>(g.x.data()), stream_);
        break;
      case NsPrecision::fp16:
        kernels::ns_normalise(b, g.in.data(), g.scale.data(), reinterpret_cast<kernels::f16*>(g.x.data()), stream_);
        break;
      case NsPrecision::fp32:
        kernels::ns_normalise(b, g.in.data(), g.scale.data(), reinterpret_cast<float*>(g.x.data()), stream_);
        break;
    }
    iterate(g);
  }
}

void CudaNewtonSchulz::iterate(Group& g) {
  std::byte* x = g.x.data();
  std::byte* y = g.y.data();
  const int count = int(g.members.size());
  for (const NsCoeffs& k : schedule_) {
    if (batched_) {
      step_gemms(g, k, x, y, 0, count);
    } else {
      for (int i = 0; i < count; ++i) step_gemms(g, k, x, y, i, 1);
    }
    std::swap(x, y);
  }
  g.result = x;
}

// One NS step for members [first, first + count) of g: X (in x) -> y.
void CudaNewtonSchulz::step_gemms(Group& g, const NsCoeffs& k, std::byte* x, std::byte* y, int first, int count) {
  const size_t off = size_t(first) * size_t(g.stride) * elem_, off_mm = size_t(first) * size_t(g.stride_mm) * elem_;
  std::byte* X = x + off;
  std::byte* Y = y + off;
  std::byte* A = g.a.data() + off_mm;
  std::byte* B = g.b.data() + off_mm;
  cuda::GemmArgs base;
  base.in_type = in_type(precision_);
  base.out_type = out_type(precision_);
  base.batch = count;
  // A = X X^T
  if (g.split) {
    gram_by_blocks(g, X, A, count);
  } else {
    cuda::GemmArgs xx = base;
    xx.M = g.m, xx.N = g.m, xx.K = g.n;
    xx.A = X, xx.B = X, xx.trans_b = true, xx.C = A;
    xx.stride_a = g.stride, xx.stride_b = g.stride, xx.stride_c = g.stride_mm;
    gemm_.gemm(xx);
  }
  // B = c A A + b A
  cuda::GemmArgs aa = base;
  aa.M = g.m, aa.N = g.m, aa.K = g.m;
  aa.A = A, aa.B = A, aa.C = B, aa.C_in = A;
  aa.alpha = float(k.c), aa.beta = float(k.b);
  aa.stride_a = g.stride_mm, aa.stride_b = g.stride_mm, aa.stride_c = g.stride_mm;
  gemm_.gemm(aa);
  // X <- B X + a X
  cuda::GemmArgs bx = base;
  bx.M = g.m, bx.N = g.n, bx.K = g.m;
  bx.A = B, bx.B = X, bx.C = Y, bx.C_in = X;
  bx.alpha = 1.f, bx.beta = float(k.a);
  bx.stride_a = g.stride_mm, bx.stride_b = g.stride, bx.stride_c = g.stride;
  gemm_.gemm(bx);
}

// A = X X^T for `count` members by h x h blocks, m = 2h (see the header): X_j = rows [jh, jh + h)
// of X; A_jj = X_j X_j^T for j = 0, 1 as one batch of 2·count, A_01 = X_0 X_1^T, A_10 = A_01^T.
void CudaNewtonSchulz::gram_by_blocks(Group& g, const std::byte* X, std::byte* A, int count) {
  const int h = g.m / 2;
  cuda::GemmArgs d;
  d.in_type = in_type(precision_), d.out_type = out_type(precision_);
  d.M = h, d.N = h, d.K = g.n, d.trans_b = true, d.ldc = g.m;
  d.A = X, d.B = X, d.C = A;
  d.batch = 2 * count;
  d.stride_a = d.stride_b = int64_t(h) * g.n;        // g.stride == m·n: the halves are evenly spaced
  d.stride_c = int64_t(h) * g.m + h;                 // (0, 0) then (h, h), then the next member
  gemm_.gemm(d);
  cuda::GemmArgs u = d;
  u.B = X + size_t(h) * size_t(g.n) * elem_;
  u.C = A + size_t(h) * elem_;
  u.batch = count;
  u.stride_a = u.stride_b = g.stride;
  u.stride_c = g.stride_mm;
  gemm_.gemm(u);
  switch (precision_) {
    case NsPrecision::bf16: kernels::ns_mirror(count, g.m, g.stride_mm, reinterpret_cast<kernels::bf16*>(A), stream_); break;
    case NsPrecision::fp16: kernels::ns_mirror(count, g.m, g.stride_mm, reinterpret_cast<kernels::f16*>(A), stream_); break;
    case NsPrecision::fp32: kernels::ns_mirror(count, g.m, g.stride_mm, reinterpret_cast<float*>(A), stream_); break;
  }
}

}  // namespace pg
