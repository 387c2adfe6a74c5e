// Ranks as threads of one process: the Comm the CPU trainer uses for dist.cpu_ranks > 1 and the
// tests use to run the data-parallel algorithms on any number of ranks without a GPU.
//
// The ranks share an InProcessGroup. A collective is: every rank posts its buffer pointers,
// meets the others at a barrier, computes its part reading the other ranks' buffers directly,
// and meets them again before returning (so no rank changes a buffer another is still reading).
// Reductions are deterministic: element i is op over ranks 0, 1, ..., W-1 in that order, in fp32
// for f32 and bf16 (bf16 inputs widened, the sum rounded to bf16 once, to nearest even) and in
// double for f64; avg divides that sum by W. The result is therefore independent of thread timing
// and bitwise the same on every rank. all_reduce splits the elements into W chunks, rank r
// reducing chunk r into the group's scratch, then every rank copies the whole result out.
//
// Failure: run_ranks catches an exception escaping a rank, marks the group failed, and every
// other rank's pending or next collective throws PeerFailure, so the group unwinds instead of
// hanging; run_ranks then rethrows the first rank's original exception. A collective that waits
// longer than the group's timeout (a rank that never arrives: an SPMD bug) throws too.
#pragma once
#include <condition_variable>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "dist/comm.hpp"

namespace pg::dist {

// Thrown in a rank whose collective was abandoned because another rank failed.
struct PeerFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class InProcessGroup {
 public:
  InProcessGroup(int world_size, double timeout_s);
  int world_size() const { return world_size_; }

  // Marks the group failed (first call wins) and wakes every waiting rank.
  void abort(int rank, const std::string& what);
  // Why the group failed; empty while it has not.
  std::string failure();

 private:
  friend class InProcessComm;
  struct Slot {
    const void* send = nullptr;
    void* recv = nullptr;
  };
  void arrive_and_wait(int rank);  // barrier over all ranks; throws PeerFailure once failed

  int world_size_;
  double timeout_s_;
  std::mutex m_;
  std::condition_variable cv_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  bool failed_ = false;
  std::string failure_;
  std::vector<Slot> slots_;
  std::vector<unsigned char> scratch_;  // all_reduce result, sized by rank 0 between barriers
};

class InProcessComm final : public Comm {
 public:
  InProcessComm(InProcessGroup& group, int rank) : group_(&group), rank_(rank) {}
  int rank() const override { return rank_; }
  int world_size() const override { return group_->world_size(); }

  void all_reduce(void* buf, int64_t count, DType dtype, ReduceOp op) override;
  void reduce_scatter(const void* send, void* recv, int64_t recv_count, DType dtype, ReduceOp op) override;
  void all_gather(const void* send, void* recv, int64_t send_count, DType dtype) override;
  void broadcast(void* buf, int64_t count, DType dtype, int root) override;
  void barrier() override;
  using Comm::all_reduce;
  using Comm::broadcast;

 private:
  void post(const void* send, void* recv);
  InProcessGroup* group_;
  int rank_;
};

// Runs body(comm) on world_size ranks: rank 0 on the calling thread, the others on new threads.
// Returns when all have finished; rethrows the first failing rank's exception.
void run_ranks(int world_size, double timeout_s, const std::function<void(Comm&)>& body);

}  // namespace pg::dist
