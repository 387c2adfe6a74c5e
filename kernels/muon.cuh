// Muon's elementwise halves on the GPU, around the grouped Newton-Schulz of
// src/optim/cuda_newton_schulz.cpp (math: src/optim/muon.hpp; layouts: newton_schulz.cuh).
// One shape group per call; matrix k of the group is a parameter slice at params/grads +
// param_offsets[k] and its momentum at momentum + state_offsets[k], row-major, m x n or (flags
// bit kNsTall) n x m; flags bit kMuonDecays: the tensor takes weight decay.
//
// muon_momentum, per element, g = grads·grad_scale:
//   B <- mu·B + (1 - mu)·g;   D = (1 - mu)·g + mu·B (nesterov) or B
//   in[k] = D in the wide orientation (fp32), partial[k, tile] = Σ over the tile of D²
//   (the input of CudaNewtonSchulz::orthogonalise: Muon's momentum, Nesterov and the gather in
//   one pass over the gradient).
// muon_update, per element, O = the orthogonalised direction (wide, bf16 | fp16 | fp32):
//   W <- W·decay - step·O,  decay = u.decay when the tensor decays else 1,
//   step = u.step_tall for a tall matrix else u.step_wide (the update scale depends on rows/cols);
//   params_bf16 = bf16(W) when not null.
// Grid: 32 x 32 tiles of the wide matrix (ns_tile.cuh), block (32, 8).
#pragma once
#include <cstdint>

#include "kernels/newton_schulz.cuh"
#include "kernels/types.cuh"

namespace pg::kernels {

constexpr uint8_t kMuonDecays = 2;

struct MuonUpdate {
  float decay = 1.f;                      // 1 - lr·wd (for the tensors that decay)
  float step_wide = 0.f, step_tall = 0.f; // lr·scale(rows, cols) for a wide (or square) / tall matrix
};

void muon_momentum(const NsBatch& b, const int64_t* param_offsets, const int64_t* state_offsets, const uint8_t* flags,
                   const float* grads, float grad_scale, float* momentum, float mu, bool nesterov, float* in,
                   float* partial, cudaStream_t stream);

void muon_update(const NsBatch& b, const bf16* ortho, const int64_t* param_offsets, const uint8_t* flags,
                 float* params, bf16* params_bf16, const MuonUpdate& u, cudaStream_t stream);
void muon_update(const NsBatch& b, const f16* ortho, const int64_t* param_offsets, const uint8_t* flags,
                 float* params, bf16* params_bf16, const MuonUpdate& u, cudaStream_t stream);
void muon_update(const NsBatch& b, const float* ortho, const int64_t* param_offsets, const uint8_t* flags,
                 float* params, bf16* params_bf16, const MuonUpdate& u, cudaStream_t stream);

}  // namespace pg::kernels
