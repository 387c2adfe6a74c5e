// What the engines share that needs no device: which configs the CUDA trainer takes, whether it
// exists here, the backward stage of each gradient bucket, and the FLOP count behind MFU
// (engine.hpp).
#include "train/engine.hpp"

#include <algorithm>
#include <map>

#include "model/gpt.hpp"

#ifdef POLARGPT_WITH_CUDA
#include "backend/cuda/device.hpp"
#endif

namespace pg {

std::string cuda_world_size_unsupported(int world_size) {
#ifdef POLARGPT_WITH_NCCL
  (void)world_size;
  return "";
#else
  return "WORLD_SIZE=" + std::to_string(world_size) +
         ": multi-GPU data parallelism needs NCCL, which this build lacks (configure with nccl.h and libnccl "
         "present); train in one process (without scripts/launch.sh)";
#endif
}

std::string cuda_trainer_unsupported(const Config& cfg, int world_size) {
  const std::string tail = " is not supported on --device cuda yet; use --device cpu";
  // MoE runs on the GPU (CudaMoe inside CudaGpt); the bias balance reads each rank's own routing
  // stats, as on the CPU, so it needs one rank.
  if (world_size > 1 && cfg.moe.n_expert > 0 && cfg.moe.balance == "bias")
    return "moe.balance = bias: not supported with more than one data-parallel rank yet; use moe.balance = aux";
  // Without norms each residual is folded into its branch's last GEMM; an MoE block's output would
  // need that inside the MoE combine.
  if (cfg.moe.n_expert > 0 && cfg.model.norm == "none")
    return "model.norm = none: MoE blocks need norms on --device cuda; use model.norm = layernorm or rmsnorm, or "
           "--device cpu";
  if (cfg.dist.cpu_ranks > 1)
    return "dist.cpu_ranks = " + std::to_string(cfg.dist.cpu_ranks) + ": ranks as threads are a CPU feature; use 1 on --device cuda";
  if (world_size > 1 && !cuda_world_size_unsupported(world_size).empty()) return cuda_world_size_unsupported(world_size);
  const int hs = cfg.d_head();
  if (hs != 32 && hs != 64 && hs != 128)
    return "model.d_model / model.n_head: the cuda backend needs a head size of 32, 64 or 128 (got " +
           std::to_string(hs) + ")";
  // The attention kernels put batch x heads on one grid dimension.
  if (int64_t(cfg.train.batch_size) * cfg.model.n_head > 65535)
    return "train.batch_size * model.n_head = " + std::to_string(int64_t(cfg.train.batch_size) * cfg.model.n_head) +
           ": the cuda attention kernels take at most 65535; use a smaller train.batch_size and more train.grad_accum";
  return "";
}

std::vector<int> gpt_bucket_stages(const Config& cfg, const ParamTable& table, std::span<const dist::Bucket> buckets) {
  const GptOffsets o = gpt_offsets(cfg, table);
  const int L = cfg.model.n_layer;
  std::map<int64_t, int> stage_at;  // tensor offset -> stage; absent: -1
  auto put = [&](int64_t off, int stage) {
    if (off >= 0) stage_at[off] = stage;
  };
  put(o.lnf_w, L), put(o.lnf_b, L);
  if (o.head != o.wte) put(o.head, L);
  for (int l = 0; l < int(o.layers.size()); ++l) {
    const GptLayerOffsets& w = o.layers[size_t(l)];
    for (int64_t off : {w.ln1_w, w.ln1_b, w.q, w.k, w.v, w.qb, w.kb, w.vb, w.o, w.ob, w.ln2_w, w.ln2_b, w.fc, w.fcb,
                        w.proj, w.projb})
      put(off, l);
  }
  std::vector<int> out;
  for (const dist::Bucket& b : buckets) {
    int stage = L;
    for (const ParamInfo& e : table.entries())
      if (e.offset < b.end && e.offset + e.numel > b.begin) {
        const auto it = stage_at.find(e.offset);
        stage = std::min(stage, it == stage_at.end() ? -1 : it->second);
      }
    out.push_back(stage);
  }
  return out;
}

bool cuda_trainer_available(std::string* why) {
#ifdef POLARGPT_WITH_CUDA
  if (cuda::device_count() > 0) return true;
  if (why) *why = "no CUDA device found on this machine";
  return false;
#else
  if (why) *why = "this build has no CUDA backend (configure with nvcc present, or -DPOLARGPT_CUDA=ON)";
  return false;
#endif
}

double flops_per_token(const Config& cfg, const ParamTable& table) {
  double n = 0.0;
  bool has_head = false;
  // A token passes through top_k of an MoE block's routed experts (the shared ones always): only
  // that share of the routed expert tensors is active, so MFU counts the FLOPs actually spent.
  const double routed_share = cfg.moe.n_expert > 0 ? double(cfg.moe.top_k) / cfg.moe.n_expert : 1.0;
  for (const auto& p : table.entries()) {
    if (p.role == Role::embed || p.role == Role::pos_embed) continue;
    has_head = has_head || p.role == Role::head;
    const bool routed = p.name.find(".moe.experts.") != std::string::npos;
    n += double(p.numel) * (routed ? routed_share : 1.0);
  }
  // A tied head is the embedding matrix: its matmul still costs V·C per token.
  if (!has_head) n += double(cfg.model.vocab_size) * cfg.model.d_model;
  return 6.0 * n + 12.0 * cfg.model.n_layer * double(cfg.model.seq_len) * cfg.model.d_model;
}

double peak_tflops_for_device(const std::string& name) {
  const bool h100 = name.find("H100") != std::string::npos, h200 = name.find("H200") != std::string::npos;
  if (h100 && name.find("PCIe") != std::string::npos) return 756.0;  // H100 PCIe: lower clocks, 114 SMs
  if (h100 || h200) return 989.4;  // SXM: 132 SMs, dense bf16 tensor cores
  return 0.0;
}

}  // namespace pg
