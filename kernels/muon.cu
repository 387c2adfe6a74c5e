// Muon's momentum + gather and its weight update (math and layouts: muon.cuh).
#include "backend/cuda/check.hpp"
#include "kernels/muon.cuh"
#include "kernels/ns_tile.cuh"

namespace pg::kernels {
namespace {

__global__ void muon_momentum_kernel(NsBatch b, const int64_t* param_offsets, const int64_t* state_offsets,
                                     const uint8_t* flags, const float* grads, float grad_scale, float* momentum,
                                     float mu, bool nesterov, float* in, float* partial) {
  __shared__ ns_tile::Tile tile;
  __shared__ float scratch[ns_tile::kRows];
  const int k = blockIdx.z;
  const float* g = grads + param_offsets[k];
  float* buf = momentum + state_offsets[k];
  float* dst = in + int64_t(k) * b.stride;
  const float one_minus_mu = 1.f - mu;
  float ss = 0.f;
  ns_tile::to_wide(
      b.m, b.n, flags[k] & kNsTall, tile,
      [&](int64_t s) {
        const float gs = g[s] * grad_scale;
        const float bs = mu * buf[s] + one_minus_mu * gs;
        buf[s] = bs;
        return nesterov ? one_minus_mu * gs + mu * bs : bs;
      },
      [&](int64_t w, float d) {
        dst[w] = d;
        ss += d * d;
      });
  ss = ns_tile::block_total(ss, scratch);
  if (threadIdx.x == 0 && threadIdx.y == 0) partial[int64_t(k) * gridDim.x * gridDim.y + ns_tile::tile_index()] = ss;
}

template <class T>
__global__ void muon_update_kernel(NsBatch b, const T* ortho, const int64_t* param_offsets, const uint8_t* flags,
                                   float* params, bf16* params_bf16, MuonUpdate u) {
  __shared__ ns_tile::Tile tile;
  const int k = blockIdx.z;
  const uint8_t f = flags[k];
  const bool tall = f & kNsTall;
  const float decay = (f & kMuonDecays) ? u.decay : 1.f, step = tall ? u.step_tall : u.step_wide;
  const T* o = ortho + int64_t(k) * b.stride;
  float* w = params + param_offsets[k];
  bf16* wb = params_bf16 ? params_bf16 + param_offsets[k] : nullptr;
  ns_tile::from_wide(
      b.m, b.n, tall, tile, [&](int64_t i) { return ns_tile::load(o, i); },
      [&](int64_t s, float v) {
        const float x = w[s] * decay - step * v;
        w[s] = x;
        if (wb) wb[s] = __float2bfloat16_rn(x);
      });
}

template <class T>
void update(const NsBatch& b, const T* ortho, const int64_t* param_offsets, const uint8_t* flags, float* params,
            bf16* params_bf16, const MuonUpdate& u, cudaStream_t stream) {
  if (b.count == 0) return;
  muon_update_kernel<<<ns_tile::grid(b), ns_tile::block(), 0, stream>>>(b, ortho, param_offsets, flags, params,
                                                                         params_bf16, u);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void muon_momentum(const NsBatch& b, const int64_t* param_offsets, const int64_t* state_offsets, const uint8_t* flags,
                   const float* grads, float grad_scale, float* momentum, float mu, bool nesterov, float* in,
                   float* partial, cudaStream_t stream) {
  if (b.count == 0) return;
  muon_momentum_kernel<<<ns_tile::grid(b), ns_tile::block(), 0, stream>>>(
      b, param_offsets, state_offsets, flags, grads, grad_scale, momentum, mu, nesterov, in, partial);
  CUDA_CHECK_LAUNCH();
}

void muon_update(const NsBatch& b, const bf16* ortho, const int64_t* param_offsets, const uint8_t* flags,
                 float* params, bf16* params_bf16, const MuonUpdate& u, cudaStream_t stream) {
  update(b, ortho, param_offsets, flags, params, params_bf16, u, stream);
}
void muon_update(const NsBatch& b, const f16* ortho, const int64_t* param_offsets, const uint8_t* flags,
                 float* params, bf16* params_bf16, const MuonUpdate& u, cudaStream_t stream) {
  update(b, ortho, param_offsets, flags, params, params_bf16, u, stream);
}
void muon_update(const NsBatch& b, const float* ortho, const int64_t* param_offsets, const uint8_t* flags,
                 float* params, bf16* params_bf16, const MuonUpdate& u, cudaStream_t stream) {
  update(b, ortho, param_offsets, flags, params, params_bf16, u, stream);
}

}  // namespace pg::kernels
