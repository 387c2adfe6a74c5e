// One training step of CudaGpt at GPT-2 124M (llm.c's configuration: 12 layers, 12 heads,
// d_model 768, learned positions, LayerNorm, GELU, tied embeddings, vocab padded to 50304,
// seq 1024) on random tokens: forward + backward + AdamW over the flat buffer. Prints the median
// step time over `steps` steps after `warmup` steps, tokens/s, model FLOP/s and MFU, the arena
// and the device memory in use.
//   usage: gpt_step_bench [B=8] [steps=10] [warmup=3] [variant=gpt|lipschitz] [option=heuristic|...]
// variant lipschitz: the same size as model.variant = lipschitz (no norms, RoPE, no biases, untied
// head; configs/lipschitz-gpt2.json's model), to set its step beside the standard one's.
// option, one change from the model's defaults (heuristic: none), to set variants of the step side
// by side:
//   tuned          each GEMM shape's algorithm picked by timing cuBLASLt's candidates in the
//                  first (warm-up) step instead of taken from its heuristic (GemmRunner::set_autotune)
//   cublas_gelu    the MLP's GELU GEMMs through cuBLASLt's epilogues instead of kernels/gelu_gemm.cuh
//   gelu_gemm_bwd  ours for the backward's GELU GEMM only
//   norm_residual  the residual adds in the norm kernels instead of in the branches' last GEMMs
//                  (CudaGpt::set_residual_in_gemm(false))
//   graph          the default step replayed from a CUDA graph (Gpt2Step::median_ms_graph)
//   gelu_pair      our GELU GEMMs on clusters of two CTAs sharing A's loads (GeluGemmKernel::Pair)
//   dq_acc_workspace  the attention backward's dq accumulators in the workspace, cleared by each
//                  block's pre-pass, instead of in the next block's MLP activations
//                  (CudaGpt::set_dq_acc_in_fc(false))
//   norm_group     the norms' backward by the group kernel instead of a warp a row
//                  (kernels::NormBwdKernel::Group)
// FLOPs per token: 6·n_params + 12·n_layer·d_model·T (the PaLM / llm.c count, as
// bench/torch_gpt2.py); MFU against kPeakTflops, the H100 SXM's dense bf16 peak.
// scripts/bench_gpt2.sh runs it beside the PyTorch baseline.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "backend/cuda/device.hpp"
#include "bench/gpt2_step.hpp"
#include "config/config.hpp"
#include "core/rng.hpp"
#include "kernels/adamw.cuh"
#include "model/cuda_gpt.hpp"
#include "model/gpt.hpp"

using namespace pg;

int main(int argc, char** argv) {
  if (cuda::device_count() == 0) {
    std::printf("gpt_step_bench: skipped: no CUDA device\n");
    return 0;
  }
  const int B = argc > 1 ? std::atoi(argv[1]) : 8, T = 1024;
  const int n_steps = argc > 2 ? std::atoi(argv[2]) : 10, n_warmup = argc > 3 ? std::atoi(argv[3]) : 3;
  constexpr double kPeakTflops = 989.0;
  const std::string variant = argc > 4 ? argv[4] : "gpt";
  if (variant != "gpt" && variant != "lipschitz") {
    std::fprintf(stderr, "gpt_step_bench: variant: expected gpt or lipschitz, got %s\n", variant.c_str());
    return 2;
  }
  const std::string option = argc > 5 ? argv[5] : "heuristic";
  const std::vector<std::string> options = {"heuristic",     "tuned", "cublas_gelu", "gelu_gemm_bwd",
                                            "norm_residual", "graph", "gelu_pair",
                                            "dq_acc_workspace", "norm_group"};
  if (std::find(options.begin(), options.end(), option) == options.end()) {
    std::fprintf(stderr,
                 "gpt_step_bench: option: expected heuristic, tuned, cublas_gelu, gelu_gemm_bwd, norm_residual, graph, "
                 "gelu_pair, dq_acc_workspace or norm_group, got %s\n",
                 option.c_str());
    return 2;
  }
  std::vector<std::string> sets;
  if (variant == "lipschitz")
    sets = {"model.variant=lipschitz", "model.norm=none", "model.pos=rope", "model.bias=false",
            "model.tie_embeddings=false"};
  bench::Gpt2Step bench(B, sets);
  const ParamTable& table = bench.table();
  bench.model().set_gemm_autotune(option == "tuned");
  if (option == "cublas_gelu") bench.model().set_gelu_gemm(CudaGpt::GeluGemm::None);
  if (option == "gelu_gemm_bwd") bench.model().set_gelu_gemm(CudaGpt::GeluGemm::Backward);
  if (option == "norm_residual") bench.model().set_residual_in_gemm(false);
  if (option == "gelu_pair") bench.model().set_gelu_gemm_kernel(kernels::GeluGemmKernel::Pair);
  if (option == "dq_acc_workspace") bench.model().set_dq_acc_in_fc(false);
  if (option == "norm_group") bench.model().set_norm_bwd_kernel(kernels::NormBwdKernel::Group);
  std::printf("gpt_step_bench: GPT-2 124M, variant %s (%lld params), B=%d T=%d, arena %.2f GiB\n", variant.c_str(),
              (long long)table.n_params(), B, T, double(bench.model().arena_bytes()) / (1 << 30));
  double loss = 0.0;
  const float med =
      option == "graph" ? bench.median_ms_graph(n_steps, n_warmup, &loss) : bench.median_ms(n_steps, n_warmup, &loss);
  size_t free_b = 0, total_b = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  std::printf("gpt_step_bench: loss %.4f, median %.2f ms/step, %.0f tokens/s, device memory in use %.2f GiB\n", loss,
              med, double(B) * T / (med * 1e-3), double(total_b - free_b) / (1 << 30));
  const double tok_s = double(B) * T / (med * 1e-3);
  // Untied (lipschitz): wte is a lookup, only the head is a matmul, so one V x C is left out.
  const double n_matmul = double(table.n_params()) - (variant == "lipschitz" ? 50304.0 * 768 : 0.0);
  const double flops_tok = 6.0 * n_matmul + 12.0 * 12 * 768 * T;
  const double tflops = flops_tok * tok_s * 1e-12;
  std::printf("ours B=%d T=%d ms=%.2f tokens_s=%.0f tflops=%.1f mfu=%.3f device_used_gib=%.2f variant=%s option=%s\n", B,
              T, med, tok_s, tflops, tflops / kPeakTflops, double(total_b - free_b) / (1 << 30), variant.c_str(),
              option.c_str());
  return 0;
}
