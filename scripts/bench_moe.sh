#!/usr/bin/env bash
# The MoE benchmark of issue 7, on a GPU machine: configs/moe-gpt2.json (12 layers, every other
# MLP a 64-expert top-2 MoE, ~124M active parameters) against the dense GPT-2 124M of the same
# active size (configs/gpt2-124m.json), both through `polargpt train --device cuda` for STEPS
# steps of B x 1024 tokens on the bundled corpus, in the same call; then build-gpu/moe_bench (one
# MoE block against the dense MLP, and the routing + dispatch/combine kernels' share of the block).
# Prints each trainer's median tokens/s and MFU over the log intervals after the first, and the
# MoE step's time per token over the dense one's (goal: at most 1.5).
# Logs go to $OUT when set (else $BUILD_DIR/logs).
#   usage: scripts/bench_moe.sh [B=32] [steps=60]
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_build.sh
B=${1:-32} STEPS=${2:-60}
fail=0
echo "== build ($BUILD_DIR) $(date -u +%H:%M:%S)"
gpu_build moe polargpt moe_bench
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)

# train_run NAME CONFIG: the trainer for STEPS steps; metrics to $LOGS/moe_NAME_metrics.jsonl.
train_run() {
  local name=$1 config=$2 run
  run=$(mktemp -d)/run
  echo "== trainer ($name): $config, $STEPS steps of $B x 1024 on $GPU"
  # The bundled val split is smaller than a batch: the one eval at the end reads the train split.
  "$BUILD_DIR/polargpt" train --config "$config" --device cuda --out "$run" \
    --set train.batch_size="$B" --set train.grad_accum=1 --set train.max_steps="$STEPS" \
    --set data.val="data/brown/brown_train_*.bin" --set train.eval_batches=1 \
    --set optim.warmup_steps=10 --set train.log_every=10 --set train.eval_every=0 \
    --set train.checkpoint_every=0 2>&1 | tee "$LOGS/moe_${name}_trainer.txt" || fail=1
  cp "$run/metrics.jsonl" "$LOGS/moe_${name}_metrics.jsonl" 2>/dev/null
}
train_run dense configs/gpt2-124m.json
train_run moe configs/moe-gpt2.json

echo "== moe_bench (one block, 8192 tokens)"
"$BUILD_DIR/moe_bench" 2>&1 | tee "$LOGS/moe_bench.txt" || fail=1

echo "== summary"
python3 - "$LOGS" "$GPU" <<'PY' || fail=1
import json, os, statistics, sys
logs, gpu = sys.argv[1], sys.argv[2]
def median(name, key):
    path = f"{logs}/moe_{name}_metrics.jsonl"
    if not os.path.exists(path):
        return None, None
    recs = [json.loads(l) for l in open(path)][1:]  # the first interval holds start-up
    if not recs:
        return None, None
    val = statistics.median(r[key] for r in recs if key in r) if any(key in r for r in recs) else None
    return val, recs[-1]
dense, _ = median("dense", "tokens_per_s")
moe, last = median("moe", "tokens_per_s")
for name, tps in (("dense GPT-2 124M", dense), ("moe-gpt2", moe)):
    print(f"{name} on {gpu}: median tokens/s {tps:,.0f}" if tps else f"{name}: no figures")
if dense and moe:
    print(f"moe time per token / dense = {dense / moe:.2f} (goal <= 1.5)")
if last is not None and "moe_max_load" in last:
    print(f"moe-gpt2 last interval: max load {last['moe_max_load']:.2f} x uniform, "
          f"dropped {last.get('moe_dropped_frac', float('nan')):.3f}")
PY
exit $fail
