#!/usr/bin/env bash
# GPT-2 124M through the real trainer on the GPU: `polargpt train --device cuda` on
# configs/gpt2-124m.json (B=64, T=1024, one micro-batch a step, AdamW) for STEPS steps on the
# bundled corpus, beside build-gpu/gpt_step_bench (the bare forward + backward + AdamW step of the
# same model on random tokens) in the same call. Prints the trainer's median tokens/s and MFU over
# its log intervals after the first (which holds the start-up), the bench program's, and the ratio:
# what the step loop (data loading, the loss and grad-norm read-backs, clipping, logging) costs.
# Logs go to $OUT when set (else $BUILD_DIR/logs).
#   usage: scripts/bench_train_gpt2.sh [B=64] [steps=100]
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_build.sh
B=${1:-64} STEPS=${2:-100}
fail=0
echo "== build ($BUILD_DIR) $(date -u +%H:%M:%S)"
gpu_build train_gpt2 polargpt gpt_step_bench
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)

echo "== bench program: gpt_step_bench $B 50 10 on $GPU"
"$BUILD_DIR/gpt_step_bench" "$B" 50 10 2>&1 | tee "$LOGS/train_gpt2_bench.txt" || fail=1

RUN=$(mktemp -d)/run
echo "== trainer: polargpt train --device cuda, $STEPS steps"
# The bundled val split holds 63 windows of 1025 tokens, fewer than a batch of 64: the one eval at
# the end reads the train split (the figure here is throughput, not generalisation).
"$BUILD_DIR/polargpt" train --config configs/gpt2-124m.json --device cuda --out "$RUN" \
  --set train.batch_size="$B" --set train.grad_accum=1 --set train.max_steps="$STEPS" \
  --set data.val="data/brown/brown_train_*.bin" --set train.eval_batches=1 \
  --set optim.warmup_steps=10 --set train.log_every=10 --set train.eval_every=0 \
  --set train.checkpoint_every=0 2>&1 | tee "$LOGS/train_gpt2_trainer.txt" || fail=1
cp "$RUN/metrics.jsonl" "$LOGS/train_gpt2_metrics.jsonl" 2>/dev/null

echo "== summary"
python3 - "$LOGS/train_gpt2_metrics.jsonl" "$LOGS/train_gpt2_bench.txt" "$GPU" <<'PY' || fail=1
import json, re, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
later = recs[1:]  # the first interval holds cuBLASLt's heuristics and the first steps
tps = statistics.median(r["tokens_per_s"] for r in later)
mfu = statistics.median(r["mfu"] for r in later) if "mfu" in later[-1] else float("nan")
print(f"trainer {sys.argv[3]}: median tokens/s {tps:,.0f} MFU {mfu:.3f} over {len(later)} log intervals; "
      f"final train loss {recs[-1]['train_loss']:.3f}")
m = re.search(r"tokens_s=(\d+)", open(sys.argv[2]).read())
if m:
    bench = float(m.group(1))
    print(f"gpt_step_bench: tokens/s {bench:,.0f}; trainer / bench = {tps / bench:.3f}")
PY
exit $fail
