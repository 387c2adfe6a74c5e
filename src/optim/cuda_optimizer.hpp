// The optimizer as the CUDA trainer sees it: the device twin of Optimizer (optimizer.hpp).
// Parameters (fp32 master), their bf16 working copy and the gradients are device buffers laid
// out by the ParamTable; the optimizer's state lives on the device too. For checkpoints the
// state is mirrored into host buffers under the same names as the CPU optimizer's
// ("<name>.exp_avg", "<name>.exp_avg_sq", "<name>.momentum_buffer"), so a checkpoint written on
// one backend resumes on the other.
//
// Implementations: CudaAdamW (the tensors with ParamInfo::muon == false) and CudaMuon (the rest);
// make_cuda_optimizer() returns AdamW alone (optim.kind = adamw) or both side by side.
//
// Over several data-parallel ranks (CudaOptimizerDist) each rank's optimizer does its share and
// keeps only that share's state: CudaMuon orthogonalises the matrices dist::assign_ns_work gives
// its rank and all-gathers the results (cuda_muon.hpp); under ZeRO-1 CudaAdamW keeps moments for
// the rank's part of every gradient bucket only (cuda_adamw.hpp). download_state() is then a
// collective (every rank calls it; each gets the whole state) and upload_state() takes the
// rank's share out of the whole state in the host mirror.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/cuda/check.hpp"
#include "config/config.hpp"
#include "dist/comm.hpp"
#include "dist/data_parallel.hpp"
#include "kernels/types.cuh"
#include "model/param_table.hpp"
#include "optim/adamw.hpp"
#include "optim/optimizer.hpp"

namespace pg {

// How the ranks of a data-parallel run share the optimizer; the default is one rank.
struct CudaOptimizerDist {
  dist::Comm* comm = nullptr;          // collectives on device buffers; null: one rank
  cudaStream_t comm_stream = nullptr;  // where comm's collectives run (ordered by events)
  // ZeRO-1: AdamW's moments cover these ranges only (part rank of each bucket, bucket order, as
  // dist::DataParallel::owned); empty: the whole buffer.
  std::vector<ElementRange> adamw_owned;
  std::vector<dist::Bucket> buckets;   // the buckets adamw_owned are parts of (for checkpoints)
  // Device, >= the padded gradient length in floats, unused between steps (the engine's
  // gradient buffer): download_state() gathers the sharded state through it.
  float* scratch = nullptr;
  int world_size() const { return comm ? comm->world_size() : 1; }
  int rank() const { return comm ? comm->rank() : 0; }
};

class CudaOptimizer {
 public:
  virtual ~CudaOptimizer() = default;
  // One update, enqueued on the optimizer's stream. grads are multiplied by grad_scale first
  // (global-norm clipping); lr_factor and t as in Optimizer::step. Writes the new fp32 master
  // weights to params and their bf16 copy to params_bf16 (when not null), for this optimizer's
  // tensors only.
  virtual void step(float* params, kernels::bf16* params_bf16, const float* grads, float grad_scale, double lr_factor,
                    int64_t t) = 0;
  // Named views of a host mirror of the whole state (valid while the optimizer lives).
  // download_state() fills the mirror from the device (synchronous; a collective when the state
  // is sharded over ranks) and returns the views; host_state() returns them as they are; after a
  // checkpoint loader wrote into those views, upload_state() copies this rank's share of the
  // mirror back to the device.
  virtual std::vector<StateTensor> download_state() = 0;
  virtual std::vector<StateTensor> host_state() = 0;
  virtual void upload_state() = 0;
  // Device bytes of this rank's state (and workspace), as allocated.
  virtual size_t device_bytes() const = 0;
  // Log lines, one per optimizer, as Optimizer::describe.
  virtual std::vector<std::string> describe() const = 0;
};

// AdamW alone or Muon + AdamW, by the table's muon flags. The table must outlive the optimizer.
std::unique_ptr<CudaOptimizer> make_cuda_optimizer(const OptimConfig& cfg, const ParamTable& table,
                                                   cudaStream_t stream, const CudaOptimizerDist& dist = {});

// Device bytes of the state make_cuda_optimizer would allocate on this rank (for the memory plan,
// before anything is allocated; CudaMuon's within a few KiB).
size_t cuda_optimizer_state_bytes(const OptimConfig& cfg, const ParamTable& table, const CudaOptimizerDist& dist = {});

// `waiter` waits for the work enqueued on `signaller` so far (through `event`).
inline void stream_wait(cudaStream_t waiter, cudaStream_t signaller, cudaEvent_t event) {
  CUDA_CHECK(cudaEventRecord(event, signaller));
  CUDA_CHECK(cudaStreamWaitEvent(waiter, event, 0));
}

}  // namespace pg
