// Data parallelism over a Comm: the gradient buckets, their reduction (all-reduce, or
// reduce-scatter for ZeRO-1), and what the trainer needs around the optimizer step.
//
// Every rank holds the whole model and computes the gradient of its own micro-batches (the mean
// over its B*T tokens, times 1/grad_accum per micro-batch); the average over the W ranks is then
// the gradient of the global batch of W*B*grad_accum sequences.
//
// Buckets: the flat gradient buffer (ParamTable offsets) is cut into contiguous buckets of about
// dist.bucket_mb MiB, listed in backward order (last parameters first), so a backend that hooks
// backward can launch bucket k's collective while the gradients of bucket k+1 are still being
// computed. Cuts fall on multiples of g = 64*W elements (rounded down from a parameter's
// offset): every bucket's length divides evenly into W parts of whole 256-byte blocks. The
// buffers are padded to a multiple of g (padded_total() >= table.total(); the padding stays 0).
//
// dist.zero = 0: each bucket is all-reduced (avg); every rank then clips and steps on the whole
// buffer, identically. dist.zero = 1 (ZeRO-1): each bucket is reduce-scattered (avg), rank r
// receiving part r of every bucket; rank r clips and runs AdamW on those parts only, keeping
// AdamW moments for them only (owned()); then each bucket's parameters are all-gathered.
// With whole_grads (ZeRO-1 beside Muon, whose owner of a matrix needs all of its gradient) the
// buckets are all-reduced instead, the norm and the clipping cover the whole buffer, and AdamW's
// moments stay sharded as above.
// dist.grad_dtype = bf16 rounds the gradients to bf16 for the collective and back to fp32 after
// it (summed in fp32 by the in-process comm; by NCCL's kernels on the GPU).
//
// On the CPU the trainer reduces all buckets after the last micro-batch's backward (the CPU
// model has no per-layer hook); the bucket order is what a backward hook would follow.
// Test: tests/dist/test_data_parallel.cpp.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "config/config.hpp"
#include "dist/comm.hpp"
#include "model/param_table.hpp"
#include "optim/adamw.hpp"

namespace pg::dist {

struct Bucket {
  int64_t begin = 0, end = 0;  // [begin, end) in the flat buffer; (end - begin) % W == 0
};

// The buckets for a table over world_size ranks, backward order; and the padded buffer length.
struct BucketLayout {
  int64_t padded_total = 0;
  std::vector<Bucket> buckets;
};
BucketLayout make_buckets(const ParamTable& table, int world_size, double bucket_mb);

class DataParallel {
 public:
  DataParallel(Comm& comm, const ParamTable& table, const DistConfig& cfg, bool whole_grads = false);

  int rank() const { return comm_->rank(); }
  int world_size() const { return comm_->world_size(); }
  bool zero() const { return zero_; }
  int64_t padded_total() const { return layout_.padded_total; }
  const std::vector<Bucket>& buckets() const { return layout_.buckets; }
  // Element ranges this rank's optimizer updates: the whole buffer, or (ZeRO-1) part rank() of
  // every bucket, in bucket order.
  const std::vector<ElementRange>& owned() const { return owned_; }

  // Rank 0's parameters to every rank (start of a run: identical replicas however initialised).
  void broadcast_params(std::span<float> params);
  // Averages the gradients over ranks, bucket by bucket; afterwards the owned ranges hold the
  // global-batch gradient (the rest of the buffer is stale under ZeRO-1 without whole_grads).
  void reduce_grads(std::span<float> grads);
  // Global L2 norm of the reduced gradient (sum of squares in double; the same on every rank).
  double grad_norm(std::span<const float> grads);
  void scale_grads(std::span<float> grads, float s);  // owned ranges only (whole_grads: all)
  // ZeRO-1: every rank's updated parts to every rank. No-op otherwise.
  void gather_params(std::span<float> params);
  // ZeRO-1: owned-range optimizer state (AdamW's compact layout) -> the whole flat buffer on
  // every rank, for checkpoints; otherwise a copy.
  void gather_state(std::span<const float> owned_state, std::span<float> full);
  // The owned ranges of a whole flat buffer (loaded from a checkpoint) -> compact layout.
  void scatter_state(std::span<const float> full, std::span<float> owned_state) const;
  // A few doubles summed over ranks (losses, counts, flags).
  void sum(std::span<double> x) { comm_->all_reduce(x, ReduceOp::sum); }

 private:
  Comm* comm_;
  bool zero_;
  bool whole_grads_;  // ZeRO-1 with all-reduced gradients (see above)
  bool bf16_;
  BucketLayout layout_;
  std::vector<ElementRange> owned_;
  std::vector<ElementRange> reduced_;  // where reduce_grads leaves the global gradient: owned_, or all
  std::vector<uint16_t> staging_;  // one bucket of bf16 gradients
};

}  // namespace pg::dist
