// The GPT-2 124M training step the GPU bench programs time (gpt_step_bench, spectral_bench):
// llm.c's configuration (12 layers, 12 heads, d_model 768, learned positions, LayerNorm, GELU,
// tied embeddings, vocab padded to 50304, T = 1024) plus any `sets`, weights from
// init_gpt_params, uniform random tokens and targets, and one step = CudaGpt forward + backward
// + AdamW (lr 1e-4, no weight decay) over the flat parameter buffer, on one stream.
#pragma once
#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "backend/cuda/check.hpp"
#include "backend/cuda/device.hpp"
#include "bench/bench_timing.hpp"
#include "config/config.hpp"
#include "core/rng.hpp"
#include "kernels/adamw.cuh"
#include "model/cuda_gpt.hpp"
#include "model/gpt.hpp"

namespace pg::bench {

inline std::vector<std::string> gpt2_sets(const std::vector<std::string>& extra) {
  std::vector<std::string> sets = {"model.n_layer=12", "model.n_head=12", "model.d_model=768",
                                   "model.vocab_size=50304", "model.seq_len=1024"};
  sets.insert(sets.end(), extra.begin(), extra.end());
  return sets;
}

class Gpt2Step {
 public:
  static constexpr int kT = 1024;

  Gpt2Step(int B, const std::vector<std::string>& extra_sets = {})
      : B_(B), cfg_(default_config(gpt2_sets(extra_sets))), table_(build_gpt_params(cfg_)) {
    std::vector<float> host(size_t(table_.total()), 0.f);
    init_gpt_params(cfg_, table_, host, 1);
    const size_t n = host.size();
    master_ = cuda::DeviceBuffer<float>{std::span<const float>(host)};
    grads_ = cuda::DeviceBuffer<float>(n), m_ = cuda::DeviceBuffer<float>(n), v_ = cuda::DeviceBuffer<float>(n);
    params_ = cuda::DeviceBuffer<kernels::bf16>(n);
    kernels::copy_to_bf16(params_.data(), master_.data(), int64_t(n), stream_.get());
    m_.zero(stream_.get()), v_.zero(stream_.get());
    Rng rng(2);
    std::vector<int32_t> tok(size_t(B) * kT), tgt(size_t(B) * kT);
    for (auto& t : tok) t = int32_t(rng.below(50257));
    for (auto& t : tgt) t = int32_t(rng.below(50257));
    tok_ = cuda::DeviceBuffer<int32_t>{std::span<const int32_t>(tok)};
    tgt_ = cuda::DeviceBuffer<int32_t>{std::span<const int32_t>(tgt)};
    model_.emplace(cfg_, table_, B, stream_.get());
    adam_.lr = 1e-4f, adam_.weight_decay = 0.f;
  }

  // The median step time in ms over `steps` steps after `warmup` (CUDA events around each step);
  // *loss (if given) receives the last step's loss.
  float median_ms(int steps, int warmup, double* loss = nullptr) {
    return bench::median_ms(
        stream_,
        [&] {
          const double l = enqueue_step();
          if (loss) *loss = l;
        },
        steps, warmup);
  }

  // The same, each step replayed from a CUDA graph of one step captured after the `warmup`
  // ordinary steps (which plan every GEMM and set every kernel's attributes): the step without
  // its host synchronisation for the loss and with one launch instead of hundreds, to measure
  // what those cost. Timing only: every replay repeats the captured step's AdamW step number.
  float median_ms_graph(int steps, int warmup, double* loss = nullptr) {
    median_ms(1, std::max(warmup, 1) - 1);
    model_->set_loss_readback(false);
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    CUDA_CHECK(cudaStreamBeginCapture(stream_.get(), cudaStreamCaptureModeThreadLocal));
    enqueue_step();
    CUDA_CHECK(cudaStreamEndCapture(stream_.get(), &graph));
    CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    const float ms = bench::median_ms(stream_, [&] { CUDA_CHECK(cudaGraphLaunch(exec, stream_.get())); }, steps, 0);
    if (loss) *loss = model_->loss();
    CUDA_CHECK(cudaGraphExecDestroy(exec));
    CUDA_CHECK(cudaGraphDestroy(graph));
    model_->set_loss_readback(true);
    return ms;
  }

  const ParamTable& table() const { return table_; }
  CudaGpt& model() { return *model_; }

 private:
  int B_;
  Config cfg_;
  ParamTable table_;
  cuda::Stream stream_;
  cuda::DeviceBuffer<float> master_, grads_, m_, v_;
  cuda::DeviceBuffer<kernels::bf16> params_;
  cuda::DeviceBuffer<int32_t> tok_, tgt_;
  std::optional<CudaGpt> model_;
  kernels::AdamWStep adam_;
  int t_ = 0;

  // One training step enqueued: zero the gradients, forward, backward, AdamW. Returns the
  // forward's loss (NaN without the model's loss readback).
  double enqueue_step() {
    grads_.zero(stream_.get());
    const double l = model_->forward(params_.data(), tok_.data(), tgt_.data(), B_, kT);
    model_->backward(params_.data(), grads_.data(), 1.0);
    adam_.t = ++t_;
    kernels::adamw_update(master_.data(), params_.data(), grads_.data(), m_.data(), v_.data(),
                          int64_t(master_.size()), adam_, false, stream_.get());
    return l;
  }
};

}  // namespace pg::bench
