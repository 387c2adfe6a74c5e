// GELU, ReLU² and the logit soft cap, forward and backward (math and layouts: activation.cuh).
#include "backend/cuda/check.hpp"
#include "kernels/activation.cuh"
#include "kernels/common.cuh"

namespace pg::kernels {
namespace {

struct GeluFwd {
  __device__ float operator()(float x, float) const { return gelu_f(x); }
};
struct GeluBwd {  // (inp, dout) -> dinp
  __device__ float operator()(float x, float g) const { return g * gelu_grad_f(x); }
};
struct Relu2Fwd {
  __device__ float operator()(float x, float) const {
    const float r = fmaxf(x, 0.f);
    return r * r;
  }
};
struct Relu2Bwd {
  __device__ float operator()(float x, float g) const { return g * 2.f * fmaxf(x, 0.f); }
};
struct SoftcapFwd {
  float cap;
  __device__ float operator()(float x, float) const { return cap * tanhf(x / cap); }
};
struct SoftcapBwd {  // (out, dout) -> dinp
  float cap;
  __device__ float operator()(float y, float g) const {
    const float t = y / cap;
    return g * (1.f - t * t);
  }
};

// out[i] = op(a[i], b[i]) (b may be null: op ignores it). Packs of 8 bf16 = 16 bytes when all
// pointers are 16-byte aligned, scalar otherwise and for the tail.
template <typename Op>
__global__ void map_kernel(bf16* out, const bf16* a, const bf16* b, int64_t n, bool vec, Op op) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t i0 = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vec) {
    const int64_t n_pack = n / 8;
    for (int64_t p = i0; p < n_pack; p += stride) {
      int4 av = reinterpret_cast<const int4*>(a)[p], bv{}, ov;
      if (b) bv = reinterpret_cast<const int4*>(b)[p];
      const bf16* ae = reinterpret_cast<const bf16*>(&av);
      const bf16* be = reinterpret_cast<const bf16*>(&bv);
      bf16* oe = reinterpret_cast<bf16*>(&ov);
#pragma unroll
      for (int j = 0; j < 8; ++j) oe[j] = from_f32<bf16>(op(to_f32(ae[j]), b ? to_f32(be[j]) : 0.f));
      reinterpret_cast<int4*>(out)[p] = ov;
    }
    done = n_pack * 8;
  }
  for (int64_t i = done + i0; i < n; i += stride)
    out[i] = from_f32<bf16>(op(to_f32(a[i]), b ? to_f32(b[i]) : 0.f));
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

template <typename Op>
void launch_map(bf16* out, const bf16* a, const bf16* b, int64_t n, Op op, cudaStream_t stream) {
  if (n <= 0) return;
  const bool vec = aligned16(out) && aligned16(a) && (!b || aligned16(b));
  constexpr int kBlock = 256;
  map_kernel<<<grid_for(vec ? (n + 7) / 8 : n, kBlock), kBlock, 0, stream>>>(out, a, b, n, vec, op);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void gelu_fwd(bf16* out, const bf16* inp, int64_t n, cudaStream_t s) {
  launch_map(out, inp, nullptr, n, GeluFwd{}, s);
}
void gelu_bwd(bf16* dinp, const bf16* dout, const bf16* inp, int64_t n, cudaStream_t s) {
  launch_map(dinp, inp, dout, n, GeluBwd{}, s);
}
void relu2_fwd(bf16* out, const bf16* inp, int64_t n, cudaStream_t s) {
  launch_map(out, inp, nullptr, n, Relu2Fwd{}, s);
}
void relu2_bwd(bf16* dinp, const bf16* dout, const bf16* inp, int64_t n, cudaStream_t s) {
  launch_map(dinp, inp, dout, n, Relu2Bwd{}, s);
}
void softcap_fwd(bf16* out, const bf16* inp, int64_t n, float cap, cudaStream_t s) {
  launch_map(out, inp, nullptr, n, SoftcapFwd{cap}, s);
}
void softcap_bwd(bf16* dinp, const bf16* dout, const bf16* out, int64_t n, float cap,
                 cudaStream_t s) {
  launch_map(dinp, out, dout, n, SoftcapBwd{cap}, s);
}

}  // namespace pg::kernels
