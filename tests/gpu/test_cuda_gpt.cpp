// The whole GPT on the GPU (model/cuda_gpt.hpp) against the CPU reference CpuGpt<double> on the
// same bf16-representable weights and tokens: the mean loss and every parameter tensor's gradient.
// The GPU runs bf16 activations (fp32 accumulation), so the tolerances are bf16's, compounded
// over two blocks: loss 1e-2 relative, each tensor's gradient 5e-2 relative ‖gpu − cpu‖/‖cpu‖.
// Tensors whose exact gradient is zero (the k bias: softmax ignores a per-row shift) are held to
// an absolute bound instead, 1e-2 of the largest gradient norm.
// Models without norms (model.norm = none, model.variant = lipschitz) take the same tolerances:
// their residuals are folded into the branch GEMMs (alpha, beta), the stream is bf16 as with norms.
// The lipschitz cases draw the embeddings from N(0, 1), as its init does, so the 1/d_head attention
// logits are far from uniform and the q, k gradients are not negligible.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "gpu_testing.hpp"
#include "model/cpu_gpt.hpp"
#include "model/cuda_gpt.hpp"
#include "model/gpt.hpp"

using namespace pg;
using namespace pg::test;

namespace {

void check_against_cpu(const std::vector<std::string>& sets, uint64_t seed, double embed_std = 0.15,
                       double weight_std = 0.15, bool gelu_gemm = false, bool residual_in_gemm = true,
                       bool graph = false, bool dq_acc_in_fc = false) {
  std::vector<std::string> all = {"model.n_layer=2", "model.n_head=2", "model.d_model=64", "model.d_ff=160",
                                  "model.vocab_size=96", "model.seq_len=32"};
  all.insert(all.end(), sets.begin(), sets.end());
  const Config cfg = default_config(all);
  const ParamTable table = build_gpt_params(cfg);
  Rng rng(seed);
  Vec P(size_t(table.total()), 0.0);
  for (const auto& p : table.entries())
    for (int64_t i = 0; i < p.numel; ++i) {
      const bool embed = p.role == Role::embed || p.role == Role::pos_embed;
      const double x = p.role == Role::norm ? 1.0 + 0.2 * rng.normal()
                       : p.role == Role::bias ? 0.1 * rng.normal()
                       : embed                ? embed_std * rng.normal()
                                              : weight_std * rng.normal();
      P[size_t(p.offset + i)] = x;
    }
  P = round_bf16(P);
  const int B = 2, T = cfg.model.seq_len, V = cfg.model.vocab_size;
  const auto x = rand_ints(rng, int64_t(B) * T, V), y = rand_ints(rng, int64_t(B) * T, V);

  CpuGpt<double> cpu_model(cfg, table, B);
  Vec G(P.size(), 0.0);
  const double cpu_loss = cpu_model.forward(P.data(), x.data(), y.data(), B, T);
  cpu_model.backward(P.data(), G.data(), 1.0);

  cuda::Stream stream;
  CudaGpt gpu_model(cfg, table, B, stream.get());
  gpu_model.set_gelu_gemm(gelu_gemm ? CudaGpt::GeluGemm::All : CudaGpt::GeluGemm::None);
  gpu_model.set_residual_in_gemm(residual_in_gemm);
  gpu_model.set_dq_acc_in_fc(dq_acc_in_fc);
  auto d_P = upload_bf16(P);
  auto d_x = upload(x), d_y = upload(y);
  cuda::DeviceBuffer<float> d_G(P.size());
  d_G.zero(stream.get());
  double gpu_loss = 0.0;
  if (graph) {  // forward and backward captured in a CUDA graph, the loss read afterwards
    gpu_model.set_loss_readback(false);
    cudaGraph_t g = nullptr;
    cudaGraphExec_t exec = nullptr;
    CUDA_CHECK(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeThreadLocal));
    CHECK(std::isnan(gpu_model.forward(d_P.data(), d_x.data(), d_y.data(), B, T)));
    gpu_model.backward(d_P.data(), d_G.data(), 1.0);
    CUDA_CHECK(cudaStreamEndCapture(stream.get(), &g));
    CUDA_CHECK(cudaGraphInstantiate(&exec, g, 0));
    CUDA_CHECK(cudaGraphLaunch(exec, stream.get()));
    gpu_loss = gpu_model.loss();
    CUDA_CHECK(cudaGraphExecDestroy(exec));
    CUDA_CHECK(cudaGraphDestroy(g));
  } else {
    gpu_loss = gpu_model.forward(d_P.data(), d_x.data(), d_y.data(), B, T);
    gpu_model.backward(d_P.data(), d_G.data(), 1.0);
  }
  stream.synchronize();
  const std::vector<float> gG = d_G.download();

  CAPTURE(cpu_loss, gpu_loss);
  CHECK(std::abs(gpu_loss - cpu_loss) / cpu_loss < 1e-2);
  check_every_gradient(table, G, gG);
}

}  // namespace

TEST_CASE("gpu GPT-2-style model: loss and every gradient match the CPU reference", "[gpu][model]") {
  // LayerNorm, learned positions, GELU, biases, tied embeddings (the defaults).
  check_against_cpu({}, 961);
}

TEST_CASE("gpu GPT-2-style model at d_model 256: the norm backward of rows of a warp or more", "[gpu][model]") {
  // Rows of 256 columns take norm_bwd's group kernel (64 take the per-warp register one), with the
  // projection biases' gradients summed by it (dsum). Weights at half the usual std keep the
  // q/k/v outputs (Σ over 4× the inputs) at the scale of the d_model 64 cases.
  check_against_cpu({"model.d_model=256", "model.n_head=4", "model.d_ff=512"}, 969, 0.15, 0.075);
}

TEST_CASE("gpu GPT-2-style model with the MLP's GELU GEMMs of kernels/gelu_gemm", "[gpu][model][gelu_gemm]") {
  // d_ff 512 and d_model 256 are shapes it takes (N % 128, K % 64); 64 rows, one partial tile.
  check_against_cpu({"model.d_model=256", "model.n_head=4", "model.d_ff=512"}, 970, 0.15, 0.075, true);
}

TEST_CASE("gpu GPT-2-style model with the residual adds in the norm kernels (set_residual_in_gemm(false))",
          "[gpu][model]") {
  check_against_cpu({}, 971, 0.15, 0.15, false, false);
  // With the GELU GEMMs of kernels/gelu_gemm, at shapes they take.
  check_against_cpu({"model.d_model=256", "model.n_head=4", "model.d_ff=512"}, 972, 0.15, 0.075, true, false);
}

TEST_CASE("gpu GPT-2-style model: the attention's dq accumulators in the MLP activations (set_dq_acc_in_fc)",
          "[gpu][model][attention]") {
  // Three blocks, so that one accumulator is cleared by a block's attention backward and used by
  // the next: hs 32 (cleared by a memset), then hs 64 (by the warpgroup-MMA kernel's blocks).
  check_against_cpu({"model.n_layer=3"}, 975, 0.15, 0.15, false, true, false, true);
  check_against_cpu({"model.n_layer=3", "model.d_model=256", "model.n_head=4", "model.d_ff=512"}, 976, 0.15, 0.075,
                    true, true, false, true);
}

TEST_CASE("gpu CudaGpt::set_dq_acc_in_fc refuses an fc narrower than the accumulator", "[gpu][model]") {
  const Config cfg = default_config({"model.n_layer=1", "model.n_head=2", "model.d_model=64", "model.d_ff=96",
                                     "model.vocab_size=96", "model.seq_len=32"});
  const ParamTable table = build_gpt_params(cfg);
  cuda::Stream stream;
  CudaGpt model(cfg, table, 2, stream.get());
  CHECK_THROWS_WITH(model.set_dq_acc_in_fc(true), Catch::Contains("d_ff >= 2"));
  CHECK_NOTHROW(model.set_dq_acc_in_fc(false));
}

TEST_CASE("gpu GPT-2-style model: the step captured in a CUDA graph, the loss read after (set_loss_readback)",
          "[gpu][model]") {
  // Every kernel and GEMM of a forward with targets and a backward, without the loss's host
  // synchronisation, replayed from a graph: the same loss and gradients as the CPU reference.
  check_against_cpu({"model.d_model=256", "model.n_head=4", "model.d_ff=512"}, 973, 0.15, 0.075, true, true, true);
}

TEST_CASE("gpu modern variant: RMSNorm, RoPE, ReLU², QK-norm, untied, soft cap, no biases", "[gpu][model]") {
  check_against_cpu({"model.norm=rmsnorm", "model.pos=rope", "model.activation=relu2", "model.qk_norm=true",
                     "model.tie_embeddings=false", "model.bias=false", "model.logit_softcap=5"},
                    962);
}

TEST_CASE("gpu model without norms: residual adds in the GEMMs, fused q/k/v", "[gpu][model]") {
  check_against_cpu({"model.norm=none"}, 963);
}

TEST_CASE("gpu lipschitz variant: convex residuals, GELU / 1.129, attention / 3 at 1/d_head, RoPE", "[gpu][model]") {
  check_against_cpu({"model.variant=lipschitz", "model.norm=none", "model.bias=false", "model.tie_embeddings=false",
                     "model.pos=rope"},
                    964, 1.0);
}

TEST_CASE("gpu lipschitz variant: learned positions (fused q/k/v), attn_scale 2, three layers", "[gpu][model]") {
  check_against_cpu({"model.variant=lipschitz", "model.norm=none", "model.bias=false", "model.tie_embeddings=false",
                     "model.attn_scale=2", "model.n_layer=3"},
                    965, 1.0);
}

TEST_CASE("gpu train.recompute: the CPU reference's loss and gradients from a smaller arena", "[gpu][model]") {
  // act_norm: every block's act, ln1 and ln2 rebuilt in backward (GELU in the GEMM epilogue
  // forward, in a kernel backward); then RMSNorm, ReLU², RoPE, QK-norm; act alone without norms.
  check_against_cpu({"train.recompute=act_norm"}, 966);
  check_against_cpu({"train.recompute=act_norm", "model.norm=rmsnorm", "model.activation=relu2", "model.pos=rope",
                     "model.qk_norm=true", "model.bias=false"},
                    967);
  check_against_cpu({"train.recompute=act", "model.norm=none"}, 968);

  // The arena drops each block's act [N, d_ff] and ln1, ln2 [N, d_model] (bf16) for one shared
  // buffer of each size (every size here a multiple of the carver's 256-byte alignment).
  const std::vector<std::string> base = {"model.n_layer=3", "model.n_head=2", "model.d_model=64", "model.d_ff=160",
                                         "model.vocab_size=96", "model.seq_len=32"};
  auto arena = [&](const std::string& recompute) {
    std::vector<std::string> sets = base;
    sets.push_back("train.recompute=" + recompute);
    const Config cfg = default_config(sets);
    cuda::Stream stream;
    return int64_t(CudaGpt(cfg, build_gpt_params(cfg), 2, stream.get()).arena_bytes());
  };
  const int64_t L = 3, N = 2 * 32, C = 64, F = 160, bf = 2;
  const int64_t none = arena("none"), act = arena("act"), act_norm = arena("act_norm");
  CAPTURE(none, act, act_norm);
  CHECK(none - act == (L - 1) * N * F * bf);
  CHECK(act - act_norm == (2 * L - 1) * N * C * bf);
}
