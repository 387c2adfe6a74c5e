// The optimizer as the CUDA trainer sees it: the device twin of Optimizer (optimizer.hpp).
// Parameters (fp32 master), their bf16 working copy and the gradients are device buffers laid
// out by the ParamTable; the optimizer's state lives on the device too. For checkpoints the
// state is mirrored into host buffers under the same names as the CPU optimizer's
// ("<name>.exp_avg", "<name>.exp_avg_sq", "<name>.momentum_buffer"), so a checkpoint written on
// one backend resumes on the other.
//
// Implementations: CudaAdamW (the tensors with ParamInfo::muon == false) and CudaMuon (the rest);
// make_cuda_optimizer() returns AdamW alone (optim.kind = adamw) or both side by side.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "kernels/types.cuh"
#include "model/param_table.hpp"
#include "optim/optimizer.hpp"

namespace pg {

class CudaOptimizer {
 public:
  virtual ~CudaOptimizer() = default;
  // One update, enqueued on the optimizer's stream. grads are multiplied by grad_scale first
  // (global-norm clipping); lr_factor and t as in Optimizer::step. Writes the new fp32 master
  // weights to params and their bf16 copy to params_bf16 (when not null), for this optimizer's
  // tensors only.
  virtual void step(float* params, kernels::bf16* params_bf16, const float* grads, float grad_scale, double lr_factor,
                    int64_t t) = 0;
  // Named views of a host mirror of the state (valid while the optimizer lives). download_state()
  // fills the mirror from the device (synchronous) and returns the views; after a checkpoint
  // loader wrote into those views, upload_state() copies the mirror back to the device.
  virtual std::vector<StateTensor> download_state() = 0;
  virtual void upload_state() = 0;
  // Log lines, one per optimizer, as Optimizer::describe.
  virtual std::vector<std::string> describe() const = 0;
};

// AdamW alone or Muon + AdamW, by the table's muon flags. The table must outlive the optimizer.
std::unique_ptr<CudaOptimizer> make_cuda_optimizer(const OptimConfig& cfg, const ParamTable& table,
                                                   cudaStream_t stream);

}  // namespace pg
