// Every config field, one row each: the single source of the JSON keys, --set keys, ranges and
// the README's config reference. Defaults live in config.hpp's member initialisers.
#include "config/field_table.hpp"

namespace pg::config_table {

const std::vector<Field>& fields() {
  static const std::vector<Field> table = {
      // ---- model ------------------------------------------------------------------------------
      {PG_FIELD(model, variant), one_of({"gpt", "lipschitz", "moe"}),
       "Architecture: plain GPT, spectrally constrained (Lipschitz) GPT, or mixture of experts."},
      {PG_FIELD(model, n_layer), at_least(1), "Transformer blocks."},
      {PG_FIELD(model, n_head), at_least(1), "Attention heads per block; must divide model.d_model."},
      {PG_FIELD(model, d_model), at_least(1), "Width of the residual stream."},
      {PG_FIELD(model, d_ff), at_least(0), "Hidden width of the MLP; 0 = 4 * model.d_model."},
      {PG_FIELD(model, vocab_size), at_least(1),
       "Vocabulary size; the bundled GPT-2 tokenizer needs 50257. On the GPU a multiple of 64 (50304 "
       "for GPT-2, as llm.c pads it) keeps the LM head's GEMMs on aligned rows."},
      {PG_FIELD(model, seq_len), at_least(1), "Context length in tokens."},
      {PG_FIELD(model, norm), one_of({"layernorm", "rmsnorm", "none"}), "Normalisation layers."},
      {PG_FIELD(model, pos), one_of({"learned", "rope"}),
       "Positions: learned absolute embeddings, or rotary (needs an even d_head)."},
      {PG_FIELD(model, activation), one_of({"gelu", "relu2"}), "MLP activation: GELU or squared ReLU."},
      {PG_FIELD(model, qk_norm), any(), "RMS-normalise q and k per head before attention."},
      {PG_FIELD(model, tie_embeddings), any(), "The LM head shares the token embedding matrix."},
      {PG_FIELD(model, bias), any(), "Biases in linear layers and norms."},
      {PG_FIELD(model, logit_softcap), at_least(0),
       "0 = off; else logits <- cap * tanh(logits / cap)."},
      {PG_FIELD(model, rope_theta), greater_than(0), "RoPE base frequency (with model.pos = rope)."},
      {PG_FIELD(model, init_std), greater_than(0), "Standard deviation of the initial weights."},
      {PG_FIELD(model, attn_scale), greater_than(0),
       "`lipschitz` variant: attention logits are scaled by attn_scale / d_head (not 1 / sqrt(d_head))."},

      // ---- data -------------------------------------------------------------------------------
      {PG_FIELD(data, train), non_empty(), "Glob of training token shards (llm.c format)."},
      {PG_FIELD(data, val), non_empty(), "Glob of validation token shards (llm.c format)."},
      {PG_FIELD(data, tokenizer), non_empty(),
       "Directory holding the GPT-2 BPE files encoder.json and vocab.bpe."},
      {PG_FIELD(data, sampling), one_of({"random", "sequential"}),
       "How training sequences are drawn from the shards."},

      // ---- optim ------------------------------------------------------------------------------
      {PG_FIELD(optim, kind), one_of({"adamw", "muon"}),
       "adamw: every parameter on AdamW; muon: 2-D hidden matrices and expert tensors on Muon, the rest "
       "(embeddings, head, norms, biases, router) on AdamW."},
      {PG_FIELD(optim, lr), greater_than(0), "Peak learning rate."},
      {PG_FIELD(optim, weight_decay), at_least(0),
       "Decoupled weight decay; never applied to norms, gains or biases."},
      {PG_FIELD(optim, beta1), half_open(0, 1), "AdamW decay of the first moment."},
      {PG_FIELD(optim, beta2), half_open(0, 1), "AdamW decay of the second moment."},
      {PG_FIELD(optim, eps), greater_than(0), "AdamW epsilon in the denominator."},
      {PG_FIELD(optim, grad_clip), at_least(0), "Clip the global gradient norm to this; 0 = off."},
      {PG_FIELD(optim, warmup_steps), at_least(0), "Steps of linear learning-rate warm-up."},
      {PG_FIELD(optim, schedule), one_of({"constant", "cosine", "linear"}),
       "Learning-rate decay after warm-up."},
      {PG_FIELD(optim, min_lr_ratio), closed(0, 1), "Floor of the decay, as a fraction of optim.lr."},
      {PG_FIELD(optim, warmdown_steps), at_least(0),
       "cosine/linear: steps of decay at the end of the run; 0 = decay over all steps after "
       "warm-up."},
      {PG_FIELD(optim, muon_lr), greater_than(0),
       "Peak learning rate of the Muon matrices (optim.lr is AdamW's); both follow optim.schedule."},
      {PG_FIELD(optim, muon_momentum), half_open(0, 1), "Muon momentum: B <- m B + (1 - m) G."},
      {PG_FIELD(optim, muon_nesterov), any(), "Muon orthogonalises (1 - m) G + m B instead of B."},
      {PG_FIELD(optim, muon_scale), one_of({"keller", "moonlight"}),
       "Muon update scale per rows x cols matrix: keller = sqrt(max(1, rows/cols)); moonlight = "
       "0.2 sqrt(max(rows, cols)) (AdamW's update RMS, so one lr can serve both)."},
      {PG_FIELD(optim, muon_include), any(),
       "Comma-separated glob patterns of parameter names (e.g. `wte,h.*.attn.*`) moved onto Muon; "
       "each must match a parameter with at least 2 dimensions."},
      {PG_FIELD(optim, muon_exclude), any(),
       "Comma-separated glob patterns of parameter names kept on AdamW; wins over optim.muon_include."},
      {PG_FIELD(optim, ns_schedule), one_of({"keller5", "polar-express"}),
       "Newton-Schulz coefficient schedule of Muon's orthogonalisation."},
      {PG_FIELD(optim, ns_steps), closed(1, 20), "Newton-Schulz iterations per Muon step."},
      {PG_FIELD(optim, ns_precision), one_of({"bf16", "fp16", "fp32"}),
       "Newton-Schulz precision (products rounded to it; emulated on the CPU)."},

      // ---- train ------------------------------------------------------------------------------
      {PG_FIELD(train, max_steps), at_least(1), "Optimizer steps in the run."},
      {PG_FIELD(train, batch_size), at_least(1), "Sequences per micro-batch, per rank."},
      {PG_FIELD(train, grad_accum), at_least(1), "Micro-batches accumulated per optimizer step."},
      {PG_FIELD(train, eval_every), at_least(0), "Evaluate every N steps; 0 = only at the end."},
      {PG_FIELD(train, eval_batches), at_least(1), "Validation micro-batches per evaluation."},
      {PG_FIELD(train, log_every), at_least(1), "Progress line and metrics every N steps."},
      {PG_FIELD(train, checkpoint_every), at_least(0),
       "Save a checkpoint every N steps; 0 = only at the end."},
      {PG_FIELD(train, seed), any(), "Seed of every random stream (initialisation, data, sampling)."},
      {PG_FIELD(train, max_skipped), at_least(1),
       "Consecutive non-finite (skipped) steps that stop the run."},
      {PG_FIELD(train, device), one_of({"auto", "cpu", "cuda"}),
       "Backend; auto = cuda when a GPU is available, else cpu."},
      {PG_FIELD(train, threads), at_least(0), "CPU threads for GEMM; 0 = all cores."},
      {PG_FIELD(train, sample_every), at_least(0), "Print a sample every N steps; 0 = never."},
      {PG_FIELD(train, sample_tokens), at_least(1), "Tokens generated per sample."},
      {PG_FIELD(train, tensorboard), any(),
       "Also write every metrics record as TensorBoard scalars (an events.out.tfevents.* file in "
       "the run directory)."},
      {PG_FIELD(train, recompute), one_of({"none", "act", "act_norm"}),
       "GPU activations recomputed in backward instead of kept: none; act = the MLP activation's "
       "output (from its kept input, d_ff x 2 bytes per token and block); act_norm = also the "
       "blocks' norm outputs (2 x d_model x 2 bytes more). Same model, less memory, a little more "
       "time; the CPU backend keeps everything."},
      {PG_FIELD(train, peak_tflops), at_least(0),
       "Peak TFLOP/s that MFU is measured against; 0 = the GPU's bf16 dense peak when known (H100/H200 "
       "989.4), else no mfu."},

      // ---- dist -------------------------------------------------------------------------------
      {PG_FIELD(dist, grad_dtype), one_of({"fp32", "bf16"}),
       "Dtype gradients are reduced in across ranks (bf16 halves the traffic; summed in fp32)."},
      {PG_FIELD(dist, zero), closed(0, 1),
       "0: gradients all-reduced, every rank holds the whole AdamW state; 1: ZeRO-1 (reduce-scatter, "
       "or all-reduce beside Muon; AdamW state sharded by rank, parameters all-gathered)."},
      {PG_FIELD(dist, timeout_s), greater_than(0),
       "Seconds the rendezvous waits for every rank to reach MASTER_ADDR:MASTER_PORT."},
      {PG_FIELD(dist, bucket_mb), greater_than(0),
       "Gradient bucket size in MiB of fp32 gradients (one collective per bucket)."},
      {PG_FIELD(dist, cpu_ranks), closed(1, 64),
       "Data-parallel ranks run as threads of one process on the CPU (multi-process runs use "
       "scripts/launch.sh and take their ranks from the environment)."},
      // ---- spectral (src/spectral/constrain.hpp) ----------------------------------------------
      {PG_FIELD(spectral, method), one_of({"none", "normalize", "hammer", "softcap", "hardcap"}),
       "Projection applied to every constrained matrix after each optimizer step (softcap needs "
       "optim.kind = muon)."},
      {PG_FIELD(spectral, norm), one_of({"spectral", "rms"}),
       "What w_max bounds: sigma_max, or the RMS->RMS norm sqrt(n_in/n_out) * sigma_max."},
      {PG_FIELD(spectral, w_max), greater_than(0), "Bound of every constrained matrix without a per-role one."},
      {PG_FIELD(spectral, w_max_attn), at_least(0), "Bound of attention matrices; 0 = spectral.w_max."},
      {PG_FIELD(spectral, w_max_mlp), at_least(0), "Bound of MLP matrices; 0 = spectral.w_max."},
      {PG_FIELD(spectral, w_max_expert), at_least(0), "Bound of expert matrices; 0 = spectral.w_max."},
      {PG_FIELD(spectral, w_max_head), at_least(0), "Bound of the untied LM head; 0 = spectral.w_max."},
      {PG_FIELD(spectral, roles), non_empty(),
       "Comma-separated roles that are constrained: any of attn, mlp, expert, head."},
      {PG_FIELD(spectral, power_iters), at_least(1), "Power iterations per step (normalize, hammer)."},
      {PG_FIELD(spectral, warm_start), any(),
       "Power iteration starts from the previous step's vectors (kept in checkpoints)."},
      {PG_FIELD(spectral, monitor_every), at_least(0),
       "Write sigma_max of the matching matrices to RUN_DIR/spectral.jsonl every N steps; 0 = off."},
      {PG_FIELD(spectral, monitor_filter), non_empty(),
       "Comma-separated glob patterns (`*`, `?`) on parameter names that the monitor measures."},
      {PG_FIELD(spectral, monitor_method), one_of({"ns5-fast", "ns3-accurate", "power"}),
       "sigma_max estimate of the monitor: polar route (keller5 or cubic NS), or power iteration."},
      {PG_FIELD(spectral, monitor_iters), at_least(1), "Power iterations of the monitor."},
      {PG_FIELD(spectral, precision), one_of({"fp32", "fp16", "bf16"}),
       "CUDA only: operand type of the GEMMs of the soft cap, hard cap and polar monitor (fp32 accumulation "
       "always; fp32 matches the CPU, fp16/bf16 run on the tensor cores at a stated loss of accuracy)."},
      // ---- moe --------------------------------------------------------------------------------
      {PG_FIELD(moe, n_expert), at_least(0),
       "Routed experts per MoE block; 0 = dense. Needs model.variant = moe (and vice versa)."},
      {PG_FIELD(moe, top_k), at_least(1),
       "Experts each token is sent to (<= moe.n_expert); their gates are the router "
       "probabilities renormalised over the chosen ones."},
      {PG_FIELD(moe, d_ff_expert), at_least(0), "Hidden width of each expert MLP; 0 = model.d_ff."},
      {PG_FIELD(moe, capacity_factor), at_least(0),
       "0 = dropless; else each expert takes at most ceil(factor * tokens * top_k / n_expert) "
       "tokens per micro-batch (first choices first, then by token order) and drops the rest."},
      {PG_FIELD(moe, every), at_least(1),
       "Block l (from 0) is MoE when (l + 1) % every == 0: 1 = all blocks, 2 = every other."},
      {PG_FIELD(moe, aux_loss_coef), at_least(0),
       "balance = aux: weight of the load-balancing loss n_expert * sum_e f_e * P_e (always "
       "logged)."},
      {PG_FIELD(moe, z_loss_coef), at_least(0), "Weight of the router z-loss mean(logsumexp(logits)^2)."},
      {PG_FIELD(moe, balance), one_of({"aux", "bias"}),
       "Load balancing: the auxiliary loss, or a per-expert bias added to the router scores for "
       "selection only, nudged after each update against the expert's load error."},
      {PG_FIELD(moe, bias_update_rate), at_least(0),
       "balance = bias: bias_e += rate * sign(1/n_expert - load_e) after each update."},
      {PG_FIELD(moe, n_shared), at_least(0),
       "Shared experts (width moe.d_ff_expert) that every token of an MoE block passes through."},
  };
  return table;
}

}  // namespace pg::config_table
