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
       "Vocabulary size; the bundled GPT-2 tokenizer needs 50257 (the GPU backend may pad it to a "
       "multiple of 128)."},
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

      // ---- data -------------------------------------------------------------------------------
      {PG_FIELD(data, train), non_empty(), "Glob of training token shards (llm.c format)."},
      {PG_FIELD(data, val), non_empty(), "Glob of validation token shards (llm.c format)."},
      {PG_FIELD(data, tokenizer), non_empty(),
       "Directory holding the GPT-2 BPE files encoder.json and vocab.bpe."},
      {PG_FIELD(data, sampling), one_of({"random", "sequential"}),
       "How training sequences are drawn from the shards."},

      // ---- optim ------------------------------------------------------------------------------
      {PG_FIELD(optim, kind), one_of({"adamw", "muon"}),
       "Optimizer of the hidden matrices; embeddings, head, norms and biases always use AdamW."},
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

      // ---- dist -------------------------------------------------------------------------------
      {PG_FIELD(dist, grad_dtype), one_of({"fp32", "bf16"}),
       "Dtype gradients are reduced in across ranks (bf16 halves the traffic; summed in fp32)."},
      {PG_FIELD(dist, zero), closed(0, 1),
       "0: gradients all-reduced, every rank holds the whole AdamW state; 1: ZeRO-1 (reduce-scatter, "
       "AdamW state sharded by rank, parameters all-gathered)."},
      {PG_FIELD(dist, timeout_s), greater_than(0),
       "Seconds the rendezvous waits for every rank to reach MASTER_ADDR:MASTER_PORT."},
      {PG_FIELD(dist, bucket_mb), greater_than(0),
       "Gradient bucket size in MiB of fp32 gradients (one collective per bucket)."},
      {PG_FIELD(dist, cpu_ranks), closed(1, 64),
       "Data-parallel ranks run as threads of one process on the CPU (multi-process runs use "
       "scripts/launch.sh and take their ranks from the environment)."},
  };
  return table;
}

}  // namespace pg::config_table
