// Muon on the GPU: the device twin of Muon (muon.hpp: the math, the config fields and the state
// name are the same), for the tensors with ParamInfo::muon set: 2-D matrices and, for a tensor
// [n_expert, rows, cols], each expert's matrix. One step, per shape group of NS (wide shape):
//   kernels::muon_momentum   g = grad·grad_scale; B <- mu B + (1 - mu) g; D (Nesterov or B),
//                            written wide into the group's NS input with its norm partials
//   CudaNewtonSchulz         O = NS(D): a few strided-batched GEMMs per step for the whole group
//   kernels::muon_update     W <- W (1 - lr wd) - lr scale O  (fp32 master), bf16 working copy
// with lr = optim.muon_lr · lr_factor and scale by optim.muon_scale (keller | moonlight) of each
// matrix's own rows x cols. Tensors without the muon flag are never touched (CudaAdamW's).
// State: the momentum, compact on the device (Muon tensors only), mirrored on the host as
// "<name>.momentum_buffer" like the CPU Muon's, so checkpoints move between backends.
// Test: tests/gpu/test_cuda_muon.cpp.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "backend/cuda/device.hpp"
#include "optim/cuda_newton_schulz.hpp"
#include "optim/cuda_optimizer.hpp"

namespace pg {

class CudaMuon final : public CudaOptimizer {
 public:
  // Throws UserError for bad settings, as Muon does. The table must outlive the optimizer.
  CudaMuon(const OptimConfig& cfg, const ParamTable& table, cudaStream_t stream);
  // The device memory it allocates (momentum and Newton-Schulz workspace), for the run's memory
  // plan before anything is allocated; within a few KiB (norm partials, offsets).
  static size_t device_bytes(const OptimConfig& cfg, const ParamTable& table);
  void step(float* params, kernels::bf16* params_bf16, const float* grads, float grad_scale, double lr_factor,
            int64_t t) override;
  std::vector<StateTensor> download_state() override;
  void upload_state() override;
  std::vector<std::string> describe() const override;

  const CudaNewtonSchulz& newton_schulz() const { return ns_; }

 private:
  struct GroupArgs {  // per NS group, for the Muon kernels
    cuda::DeviceBuffer<int64_t> state_offsets;  // [count] into momentum_
    cuda::DeviceBuffer<uint8_t> flags;          // [count] kNsTall | kMuonDecays
  };
  struct Tensor {
    int index;             // in the table
    int64_t state_offset;  // into momentum_ / host_
  };

  OptimConfig cfg_;
  const ParamTable* table_;
  cudaStream_t stream_;
  double safety_;
  std::vector<Tensor> tensors_;
  int64_t n_matrices_ = 0;
  cuda::DeviceBuffer<float> momentum_;
  std::vector<float> host_;  // the state's host mirror
  CudaNewtonSchulz ns_;
  std::vector<GroupArgs> group_args_;
};

}  // namespace pg
