// What the step loop (train/trainer.cpp) asks of a backend: the model, its parameters, gradients
// and optimizer on one device, and the data-parallel collectives. The loop (data, schedule,
// logging, eval, checkpoints, signals, resume, skipping of non-finite steps) is written once
// against this interface; two implementations:
//   CpuEngine  (train/cpu_engine.cpp)   CpuGpt<float> + Optimizer + dist::DataParallel on host
//                                       buffers, ranks as threads (dist.cpu_ranks) or one rank;
//   CudaEngine (train/cuda_engine.cpp)  CudaGpt on one GPU per rank: fp32 master weights, their
//                                       bf16 working copy, fp32 gradients and the CudaOptimizer's
//                                       state in device buffers allocated at start-up, compute on
//                                       one stream, no allocation in the step loop; data
//                                       parallelism over a Comm on device buffers (NcclComm, one
//                                       process per GPU; or any Comm that takes device buffers),
//                                       its bucket reductions overlapped with backward.
// One step, as the loop calls it:
//   begin_step(); micro_step(x, y, 1/A) × A; gnorm = reduce_grads(step);
//   [finite] update(clip_scale, ...);   [every eval] eval_batch(...) × n
// Checkpoints carry fp32 master weights and the optimizer state under the CPU optimizer's names,
// so a checkpoint written by either engine resumes on the other.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "dist/comm.hpp"
#include "dist/data_parallel.hpp"
#include "io/safetensors.hpp"
#include "model/moe_balance.hpp"
#include "model/param_table.hpp"
#include "optim/optimizer.hpp"
#include "train/trainer.hpp"

#ifdef POLARGPT_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace pg {

// What a checkpoint writes: views valid until the next call into the engine.
struct CheckpointTensors {
  std::span<const float> params;               // fp32 master weights, table layout (table.total())
  std::vector<StateTensor> optimizer;          // named optimizer state
  std::vector<io::TensorRef> extra;            // e.g. the spectral projection's power-iteration vectors
};

class TrainEngine {
 public:
  virtual ~TrainEngine() = default;

  virtual const ParamTable& table() const = 0;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // Log lines for the start of the run (memory, optimizer, data parallelism), lead rank only.
  virtual std::vector<std::string> describe() const = 0;
  // The device's dense bf16 peak in TFLOP/s when known (for MFU), else 0.
  virtual double detected_peak_tflops() const { return 0.0; }

  // Gradients <- 0 and the step's MoE stats cleared.
  virtual void begin_step() = 0;
  // Forward and backward of one micro-batch of host tokens x, y [B·T]: gradients += loss_scale ·
  // d(mean loss)/d params. Returns the micro-batch's mean loss.
  virtual double micro_step(std::span<const int32_t> x, std::span<const int32_t> y, double loss_scale) = 0;
  // The step's routing stats (MoE; empty for a dense model).
  virtual const MoeStepStats& moe_step() const = 0;
  // Averages the gradients over ranks and returns the global gradient norm (the same on every
  // rank). `step` is for RunOptions::after_backward, called before the reduction.
  virtual double reduce_grads(int step) = 0;
  // A few doubles summed over ranks (losses, flags).
  virtual void sum(std::span<double> x) = 0;
  // grads *= grad_scale, the optimizer's update (lr_factor, update count t), the replicas made
  // identical again, then the post-step hooks (spectral projection at lr, MoE score bias).
  virtual void update(float grad_scale, double lr_factor, double lr, int64_t t, int step) = 0;

  // The mean loss of one val micro-batch; *n_correct receives its argmax hits.
  virtual double eval_batch(std::span<const int32_t> x, std::span<const int32_t> y, int64_t* n_correct) = 0;

  // The spectral.jsonl records of this step (spectral_log.hpp), measured where the weights live.
  virtual std::vector<nlohmann::json> spectral_monitor(int64_t step) = 0;
  // fp32 master weights on the host (table layout), for the certificate and sampling; valid until
  // the next update.
  virtual std::span<const float> host_params() = 0;
  // The Lipschitz certificate's metrics.jsonl fields (model.variant = lipschitz) when the engine
  // measures it where the weights live; nullopt: the trainer computes it from host_params().
  virtual std::optional<nlohmann::json> device_certificate() { return std::nullopt; }
  // What a checkpoint writes. A collective under ZeRO-1: every rank calls it.
  virtual CheckpointTensors checkpoint_tensors() = 0;
  // Loads weights, optimizer state (and spectral vectors when kept) from a checkpoint directory.
  virtual void load_checkpoint(const std::string& ckpt_dir) = 0;
  // Once before the first step: rank 0's parameters to every rank.
  virtual void start() = 0;
};

// The CPU engine of one rank (comm: world size 1, or one of dist.cpu_ranks threads).
std::unique_ptr<TrainEngine> make_cpu_engine(const Config& cfg, const RunOptions& opt, dist::Comm& comm);

// Why --device cuda cannot train this config ("" when it can): the features the CUDA trainer
// does not have yet, each named by its key. Checkable without a GPU.
std::string cuda_trainer_unsupported(const Config& cfg, int world_size);
// The line of that refusal for WORLD_SIZE > 1: "" when this build has NCCL (the multi-process
// CUDA run), else why not.
std::string cuda_world_size_unsupported(int world_size);
// For each gradient bucket (dist::make_buckets), the backward stage of CudaGpt after which every
// tensor it overlaps holds its final gradient: stages run n_layer (the head and ln_f), then
// n_layer-1 .. 0 (the blocks), then -1 (wte, wpe, and the head when tied to wte, whose gradient
// the embedding backward adds to; also, conservatively, any tensor outside the dense plan's
// offsets, such as an MoE block's router and experts); a bucket's stage is the lowest of its
// tensors'. The CUDA engine
// launches a bucket's reduction after that stage (overlap with backward).
std::vector<int> gpt_bucket_stages(const Config& cfg, const ParamTable& table, std::span<const dist::Bucket> buckets);
// Whether this build has the CUDA trainer and this machine a GPU; otherwise *why says which.
bool cuda_trainer_available(std::string* why);

#ifdef POLARGPT_WITH_CUDA
// The data-parallel comm of a CUDA rank: collectives on device buffers, enqueued on `stream` in
// call order (NcclComm and its stream()); the engine orders that stream after its compute stream
// before each collective and its compute stream after the collective. comm = nullptr: one rank,
// no collectives.
struct CudaDistComm {
  dist::Comm* comm = nullptr;
  cudaStream_t stream = nullptr;
};
// The CUDA engine on the current device (train/cuda_engine.cpp); the config must have passed
// cuda_trainer_unsupported(). Throws UserError when the run does not fit in the GPU's memory.
std::unique_ptr<TrainEngine> make_cuda_engine(const Config& cfg, const RunOptions& opt, CudaDistComm comm = {});
#endif

// FLOPs of one token's forward + backward (for MFU): 6·N + 12·n_layer·seq_len·d_model, where N
// counts the parameters that take part in matmuls — every tensor except the token and position
// embeddings, plus the LM head (the embedding matrix again when tied), with an MoE block's routed
// expert tensors counted at their active share top_k / n_expert — and the second term is
// attention's QKᵀ and AV over a full (non-causal) T×T score matrix, as in the PaLM appendix.
double flops_per_token(const Config& cfg, const ParamTable& table);
// bf16 dense tensor peak of a GPU by its name, TFLOP/s: 989.4 for the H100 and H200 (SXM); 0 when
// unknown.
double peak_tflops_for_device(const std::string& device_name);

}  // namespace pg
