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
//
// Distributed (CudaOptimizerDist with W > 1 ranks; the CPU's dist/muon_split.hpp on the device):
// dist::assign_ns_work gives every matrix one owner (whole shape groups or slices of them,
// FLOP-balanced, the same on every rank). A rank runs the momentum and Newton-Schulz of its own
// matrices only, so it keeps only their momentum and NS workspace (the state is sharded whether
// or not dist.zero is set). Its NS results, group by group as CudaNewtonSchulz leaves them ([count,
// stride] wide, of the NS precision), are packed into its slot of L elements of an exchange
// buffer [W, L] and one all_gather (2-byte types as raw bf16 bits) gives every rank every slot;
// then every rank applies muon_update for every matrix from the slot it came in, so the replicas
// stay bitwise identical. Each matrix is orthogonalised by the same code as on one rank, in a
// batch of fewer members: equal to the single-rank update up to GEMM rounding.
// Checkpoints: download_state() (a collective) copies each rank's momentum to its flat-layout
// offsets in the scratch buffer, broadcasts each run of consecutive matrices from its owner, and
// downloads the whole; upload_state() takes the rank's own matrices out of the host mirror.
// Test: tests/gpu/test_cuda_muon.cpp; distributed: tests/gpu/test_cuda_dist.cpp.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "backend/cuda/device.hpp"
#include "kernels/muon.cuh"
#include "optim/cuda_newton_schulz.hpp"
#include "optim/cuda_optimizer.hpp"

namespace pg {

class CudaMuon final : public CudaOptimizer {
 public:
  // Throws UserError for bad settings, as Muon does. The table must outlive the optimizer.
  CudaMuon(const OptimConfig& cfg, const ParamTable& table, cudaStream_t stream, const CudaOptimizerDist& dist = {});
  // The device memory it allocates on rank `rank` of `world_size` (momentum, Newton-Schulz
  // workspace, exchange buffer), for the run's memory plan before anything is allocated; within a
  // few KiB (norm partials, offsets).
  static size_t state_bytes(const OptimConfig& cfg, const ParamTable& table, int world_size = 1, int rank = 0);
  void step(float* params, kernels::bf16* params_bf16, const float* grads, float grad_scale, double lr_factor,
            int64_t t) override;
  std::vector<StateTensor> download_state() override;
  std::vector<StateTensor> host_state() override;
  void upload_state() override;
  std::vector<std::string> describe() const override;
  size_t device_bytes() const override;

  const CudaNewtonSchulz& newton_schulz() const { return ns_; }

  // Every Muon matrix (an expert of a 3-D tensor is one), in table order, and who owns it.
  struct Matrices {
    std::vector<MatrixShape> shapes;
    std::vector<int64_t> param_offsets, state_offsets;  // state: the flat layout of host_
    std::vector<bool> decays;
    int64_t state_size = 0;
    std::vector<int> owner;      // dist::assign_ns_work over the ranks (all 0 on one rank)
    std::vector<int> mine;       // the indices this rank owns, in table order
    std::vector<int64_t> local;  // per index in mine: its momentum's offset in momentum_
    int64_t local_size = 0;
  };

 private:
  struct GroupArgs {  // per NS group, for the Muon kernels
    cuda::DeviceBuffer<int64_t> state_offsets;  // [count] into momentum_
    cuda::DeviceBuffer<uint8_t> flags;          // [count] kNsTall | kMuonDecays
  };
  struct Tensor {
    int index;             // in the table
    int64_t state_offset;  // into host_
  };
  // One shape group of one rank's share, as it lies in the exchange buffer after the all-gather.
  struct Slot {
    int count = 0, m = 0, n = 0;
    int64_t stride = 0, at = 0;                 // elements per member; where it starts in exchange_
    cuda::DeviceBuffer<int64_t> param_offsets;  // [count]
    cuda::DeviceBuffer<uint8_t> flags;          // [count] kNsTall | kMuonDecays
  };
  struct Copy {  // a run of momentum: host_/scratch offset, momentum_ offset, length, owner
    int64_t full, local, n;
    int owner;
  };
  void update(const kernels::NsBatch& b, const std::byte* ortho, const int64_t* offs, const uint8_t* flags, float* params,
              kernels::bf16* params_bf16, const kernels::MuonUpdate& u);

  OptimConfig cfg_;
  const ParamTable* table_;
  cudaStream_t stream_;
  CudaOptimizerDist dist_;
  double safety_;
  Matrices mats_;
  std::vector<Tensor> tensors_;
  cuda::DeviceBuffer<float> momentum_;  // this rank's matrices, table order
  std::vector<float> host_;             // the state's host mirror (every matrix, flat layout)
  CudaNewtonSchulz ns_;                 // over this rank's matrices
  std::vector<GroupArgs> group_args_;
  // W > 1: the exchange of NS results, and the runs that checkpoints move.
  std::vector<Slot> slots_;     // every rank's groups, rank by rank
  std::vector<int64_t> my_at_;  // per group of ns_: where its results go in exchange_
  int64_t slot_len_ = 0;        // L
  cuda::DeviceBuffer<std::byte> exchange_;  // [W, L] of the NS precision
  std::vector<Copy> copies_;    // every matrix's momentum in runs (each rank copies the runs it owns)
  cuda::Event ready_, gathered_;
};

}  // namespace pg
