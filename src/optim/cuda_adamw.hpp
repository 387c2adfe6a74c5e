// AdamW on the GPU (the device twin of optim/adamw.hpp, through kernels/adamw.cuh): the same
// math, param groups and schedule as the CPU optimizer — only tensors with ParamInfo::muon ==
// false, decoupled weight decay only where ParamInfo::weight_decay, lr = optim.lr · lr_factor.
// Moments m, v are fp32 device buffers in the flat layout (table offsets). Consecutive tensors
// that share the decay flag are updated by one kernel call over their whole range (the alignment
// padding between them holds zeros and stays zero). State names are the CPU optimizer's
// ("<name>.exp_avg", "<name>.exp_avg_sq"), so checkpoints cross backends.
// ZeRO-1 (CudaOptimizerDist::adamw_owned): the rank updates, and keeps moments for, only its part
// of every gradient bucket, concatenated in bucket order ("compact" layout, as the CPU AdamW's);
// each kernel call covers a run cut to one owned range. download_state() all-gathers every
// rank's parts bucket by bucket into the scratch buffer (the flat layout) and downloads it.
// Test: tests/gpu/test_cuda_trainer.cpp (through the trainer, against the CPU run).
#pragma once
#include <vector>

#include "backend/cuda/device.hpp"
#include "optim/cuda_optimizer.hpp"

namespace pg {

class CudaAdamW final : public CudaOptimizer {
 public:
  CudaAdamW(const OptimConfig& cfg, const ParamTable& table, cudaStream_t stream, const CudaOptimizerDist& dist = {});
  void step(float* params, kernels::bf16* params_bf16, const float* grads, float grad_scale, double lr_factor,
            int64_t t) override;
  std::vector<StateTensor> download_state() override;
  std::vector<StateTensor> host_state() override;
  void upload_state() override;
  std::vector<std::string> describe() const override;
  size_t device_bytes() const override { return m_.bytes() + v_.bytes(); }
  // The moments' device bytes for these settings (for the memory plan).
  static size_t state_bytes(const ParamTable& table, const CudaOptimizerDist& dist);

 private:
  struct Run {  // [begin, end) of the flat buffer, one decay flag, its moments at m_ + state
    int64_t begin, end;
    bool decay;
    int64_t state;
  };
  void gather(const float* compact, std::vector<float>& full);

  OptimConfig cfg_;
  const ParamTable* table_;
  cudaStream_t stream_;
  CudaOptimizerDist dist_;
  bool sharded_;
  std::vector<ElementRange> owned_;  // the whole buffer, or this rank's parts (ZeRO-1)
  std::vector<Run> runs_;
  cuda::DeviceBuffer<float> m_, v_;
  std::vector<float> host_m_, host_v_;  // the mirror that checkpoints read and write (flat layout)
  cuda::Event ready_;
};

}  // namespace pg
