#include "dist/nccl_comm.hpp"

#ifdef POLARGPT_WITH_NCCL
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/error.hpp"

namespace pg::dist {

namespace {

[[noreturn]] void fail(const std::string& what, const char* call, const char* file, int line) {
  throw std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + call + ": " + what);
}

}  // namespace

// Every CUDA and NCCL return is checked; the error names the call, the file and the line.
#define PG_CUDA_OK(call)                                                      \
  do {                                                                        \
    const cudaError_t e_ = (call);                                            \
    if (e_ != cudaSuccess) fail(cudaGetErrorString(e_), #call, __FILE__, __LINE__); \
  } while (0)
#define PG_NCCL_OK(call)                                                                        \
  do {                                                                                          \
    const ncclResult_t r_ = (call);                                                             \
    if (r_ != ncclSuccess) {                                                                    \
      broken_ = true;                                                                           \
      const char* last_ = comm_ ? ncclGetLastError(comm_) : nullptr;                            \
      fail(std::string(ncclGetErrorString(r_)) + (last_ && *last_ ? std::string(" (") + last_ + ")" : ""), \
           #call, __FILE__, __LINE__);                                                          \
    }                                                                                           \
  } while (0)

namespace {

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::f32: return ncclFloat32;
    case DType::bf16: return ncclBfloat16;
    case DType::f64: return ncclFloat64;
  }
  return ncclFloat32;
}

ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::avg ? ncclAvg : ncclSum; }

}  // namespace

NcclComm::NcclComm(const DistEnv& env, double timeout_s, cudaStream_t stream)
    : rank_(env.rank), world_size_(env.world_size), device_(env.local_rank) {
  int n_devices = 0;
  PG_CUDA_OK(cudaGetDeviceCount(&n_devices));
  if (env.local_rank >= n_devices)
    throw UserError("LOCAL_RANK=" + std::to_string(env.local_rank) + ": this node has " + std::to_string(n_devices) +
                    " GPU(s); --nproc-per-node must not exceed that");
  PG_CUDA_OK(cudaSetDevice(device_));

  ncclUniqueId id;
  std::memset(&id, 0, sizeof id);
  if (rank_ == 0) PG_NCCL_OK(ncclGetUniqueId(&id));
  const auto* id_bytes = reinterpret_cast<const uint8_t*>(&id);
  const std::vector<uint8_t> got =
      exchange_blob(env, std::span<const uint8_t>(id_bytes, rank_ == 0 ? sizeof id : 0), timeout_s);
  if (got.size() != sizeof id)
    throw UserError("dist: rank " + std::to_string(rank_) + " received " + std::to_string(got.size()) +
                    " bytes from the rendezvous, expected an ncclUniqueId of " + std::to_string(sizeof id));
  std::memcpy(&id, got.data(), sizeof id);

  if (stream) {
    stream_ = stream;
  } else {
    PG_CUDA_OK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    owns_stream_ = true;
  }
  PG_CUDA_OK(cudaMalloc(&flag_, sizeof(float)));
  PG_NCCL_OK(ncclCommInitRank(&comm_, world_size_, id, rank_));
}

NcclComm::~NcclComm() {
  // Errors cannot leave a destructor; a failed teardown only leaks what the process frees anyway.
  if (comm_) {
    if (broken_) ncclCommAbort(comm_);
    else if (ncclCommFinalize(comm_) == ncclSuccess) ncclCommDestroy(comm_);
    else ncclCommAbort(comm_);
  }
  if (flag_) cudaFree(flag_);
  if (owns_stream_ && stream_) cudaStreamDestroy(stream_);
}

void NcclComm::all_reduce(void* buf, int64_t count, DType dtype, ReduceOp op) {
  PG_NCCL_OK(ncclAllReduce(buf, buf, size_t(count), nccl_type(dtype), nccl_op(op), comm_, stream_));
}

void NcclComm::reduce_scatter(const void* send, void* recv, int64_t recv_count, DType dtype, ReduceOp op) {
  PG_NCCL_OK(ncclReduceScatter(send, recv, size_t(recv_count), nccl_type(dtype), nccl_op(op), comm_, stream_));
}

void NcclComm::all_gather(const void* send, void* recv, int64_t send_count, DType dtype) {
  PG_NCCL_OK(ncclAllGather(send, recv, size_t(send_count), nccl_type(dtype), comm_, stream_));
}

void NcclComm::broadcast(void* buf, int64_t count, DType dtype, int root) {
  PG_NCCL_OK(ncclBroadcast(buf, buf, size_t(count), nccl_type(dtype), root, comm_, stream_));
}

void NcclComm::barrier() {
  PG_NCCL_OK(ncclAllReduce(flag_, flag_, 1, ncclFloat32, ncclSum, comm_, stream_));
  synchronize();
}

void NcclComm::synchronize() { PG_CUDA_OK(cudaStreamSynchronize(stream_)); }

}  // namespace pg::dist
#endif  // POLARGPT_WITH_NCCL
