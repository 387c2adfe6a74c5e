// The Comm of a multi-GPU run: one process per GPU, collectives through NCCL on device buffers.
// Built only with the CUDA toolkit and NCCL (CMake defines POLARGPT_WITH_NCCL); a CPU build sees
// an empty header.
//
// Start-up (DESIGN.md decision 6): the process selects GPU LOCAL_RANK; rank 0 creates an
// ncclUniqueId and hands its bytes to every other rank through the TCP rendezvous
// (rendezvous.hpp: MASTER_ADDR:MASTER_PORT, dist.timeout_s); then every rank joins the
// communicator with ncclCommInitRank(WORLD_SIZE, id, RANK).
//
// Collectives are enqueued on the comm's stream and return without waiting (NCCL semantics);
// synchronize() waits for them, barrier() enqueues a one-element all-reduce and waits. avg is
// ncclAvg; bf16 is ncclBfloat16 (NCCL's kernels accumulate each hop in fp32 and round to bf16),
// so unlike the in-process comm the reduction order is NCCL's (ring or tree): the results agree
// across ranks but are not bitwise the in-process ones. The destructor destroys the communicator
// (aborts it when an error left it unusable) and frees what the comm allocated.
// Test: tests/gpu/test_nccl_comm.cpp (one GPU: world size 1 through the whole start-up).
#pragma once
#ifdef POLARGPT_WITH_NCCL
#include <cuda_runtime.h>
#include <nccl.h>

#include "dist/comm.hpp"
#include "dist/rendezvous.hpp"

namespace pg::dist {

class NcclComm final : public Comm {
 public:
  // stream = nullptr: the comm creates (and owns) a non-blocking stream of its own.
  NcclComm(const DistEnv& env, double timeout_s, cudaStream_t stream = nullptr);
  ~NcclComm() override;
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }

  void all_reduce(void* buf, int64_t count, DType dtype, ReduceOp op) override;
  void reduce_scatter(const void* send, void* recv, int64_t recv_count, DType dtype, ReduceOp op) override;
  void all_gather(const void* send, void* recv, int64_t send_count, DType dtype) override;
  void broadcast(void* buf, int64_t count, DType dtype, int root) override;
  void barrier() override;
  void synchronize();  // waits for every collective enqueued so far
  using Comm::all_reduce;
  using Comm::broadcast;

 private:
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  bool owns_stream_ = false;
  bool broken_ = false;  // an NCCL call failed: abort instead of destroy
  float* flag_ = nullptr;  // one device float for barrier()
  int rank_ = 0, world_size_ = 1, device_ = 0;
};

}  // namespace pg::dist
#endif  // POLARGPT_WITH_NCCL
