// The collective-communication interface that data parallelism is written against, with two
// implementations: InProcessComm (ranks as threads of one process; CPU tests and dist.cpu_ranks)
// and NcclComm (one process per GPU; nccl_comm.hpp, built with the CUDA toolkit).
//
// Collectives over W ranks, each rank passing buffers of the same counts:
//   all_reduce      x_r <- op_{s=0..W-1} x_s                        (in place, count elements)
//   reduce_scatter  recv_r[i] <- op_s send_s[r*n + i],  i < n        (send holds W*n elements)
//   all_gather      recv[s*n + i] <- send_s[i],  i < n               (recv holds W*n elements)
//   broadcast       x_r <- x_root
// op = sum, or avg = sum / W. bf16 buffers hold raw bf16 bits (uint16_t); f64 is for metrics.
// In place is allowed where NCCL allows it: reduce_scatter with recv == send + rank*n,
// all_gather with send == recv + rank*n.
//
// Every rank must call the same collectives in the same order (the usual SPMD contract); a rank
// that fails makes the others' pending and later calls throw (in-process) instead of hanging.
// Buffers live where the implementation expects them: host memory for InProcessComm, device
// memory (enqueued on the comm's stream) for NcclComm.
#pragma once
#include <bit>
#include <cstddef>
#include <cstdint>
#include <span>

#include "optim/low_precision.hpp"

namespace pg::dist {

enum class DType { f32, bf16, f64 };
enum class ReduceOp { sum, avg };

inline size_t dtype_size(DType t) { return t == DType::bf16 ? 2 : t == DType::f32 ? 4 : 8; }

// bf16 bits <-> float (to bf16: round to nearest, ties to even).
inline uint16_t bf16_bits(float x) { return uint16_t(std::bit_cast<uint32_t>(round_to_bf16(x)) >> 16); }
inline float bf16_value(uint16_t b) { return std::bit_cast<float>(uint32_t(b) << 16); }

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  virtual void all_reduce(void* buf, int64_t count, DType dtype, ReduceOp op) = 0;
  virtual void reduce_scatter(const void* send, void* recv, int64_t recv_count, DType dtype, ReduceOp op) = 0;
  virtual void all_gather(const void* send, void* recv, int64_t send_count, DType dtype) = 0;
  virtual void broadcast(void* buf, int64_t count, DType dtype, int root) = 0;
  virtual void barrier() = 0;

  // Typed conveniences over the calls above.
  void all_reduce(std::span<float> x, ReduceOp op) { all_reduce(x.data(), int64_t(x.size()), DType::f32, op); }
  void all_reduce(std::span<double> x, ReduceOp op) { all_reduce(x.data(), int64_t(x.size()), DType::f64, op); }
  void all_reduce_bf16(std::span<uint16_t> x, ReduceOp op) {
    all_reduce(x.data(), int64_t(x.size()), DType::bf16, op);
  }
  void broadcast(std::span<float> x, int root) { broadcast(x.data(), int64_t(x.size()), DType::f32, root); }
};

}  // namespace pg::dist
