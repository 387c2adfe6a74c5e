#!/usr/bin/env bash
# GPT-2 124M through the real trainer on the GPU: `polargpt train --device cuda` on
# configs/gpt2-124m.json (B=64, T=1024, one micro-batch a step, AdamW) for STEPS steps on the
# bundled corpus, beside build-gpu/gpt_step_bench (the bare forward + backward + AdamW step of the
# same model on random tokens) in the same call. Prints the trainer's median tokens/s and MFU over
# its log intervals after the first (which holds the start-up), the bench program's, and the ratio:
# what the step loop (data loading, the loss and grad-norm read-backs, clipping, logging) costs.
# Logs go to $OUT when set (else $BUILD_DIR/logs).
#   usage: scripts/bench_train_gpt2.sh [B=64] [steps=100] [variants]
# With `variants`, the trainer also runs the same steps with Muon (optim.kind=muon) and with Muon
# plus the hard cap of every hidden matrix after each step (spectral.method=hardcap at fp16, roles
# attn,mlp), and prints each one's tokens/s against the AdamW run's: what the optimizer and the
# projection cost inside the real step loop.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_build.sh
B=${1:-64} STEPS=${2:-100} VARIANTS=${3:-}
fail=0
echo "== build ($BUILD_DIR) $(date -u +%H:%M:%S)"
gpu_build train_gpt2 polargpt gpt_step_bench
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)

echo "== bench program: gpt_step_bench $B 50 10 on $GPU"
"$BUILD_DIR/gpt_step_bench" "$B" 50 10 2>&1 | tee "$LOGS/train_gpt2_bench.txt" || fail=1

# train_run NAME SET...: the trainer on configs/gpt2-124m.json with extra --set flags; its metrics
# land in $LOGS/train_gpt2_NAME_metrics.jsonl.
train_run() {
  local name=$1
  shift
  local run
  run=$(mktemp -d)/run
  echo "== trainer ($name): polargpt train --device cuda, $STEPS steps $*"
  # The bundled val split holds 63 windows of 1025 tokens, fewer than a batch of 64: the one eval
  # at the end reads the train split (the figure here is throughput, not generalisation).
  "$BUILD_DIR/polargpt" train --config configs/gpt2-124m.json --device cuda --out "$run" \
    --set train.batch_size="$B" --set train.grad_accum=1 --set train.max_steps="$STEPS" \
    --set data.val="data/brown/brown_train_*.bin" --set train.eval_batches=1 \
    --set optim.warmup_steps=10 --set train.log_every=10 --set train.eval_every=0 \
    --set train.checkpoint_every=0 "$@" 2>&1 | tee "$LOGS/train_gpt2_${name}_trainer.txt" || fail=1
  cp "$run/metrics.jsonl" "$LOGS/train_gpt2_${name}_metrics.jsonl" 2>/dev/null
}
train_run adamw --set optim.kind=adamw
if [[ -n $VARIANTS ]]; then
  train_run muon --set optim.kind=muon
  train_run muon_hardcap --set optim.kind=muon --set spectral.method=hardcap --set spectral.precision=fp16 \
    --set spectral.roles=attn,mlp --set spectral.w_max=8
fi

echo "== summary"
python3 - "$LOGS" "$GPU" <<'PY' || fail=1
import json, os, re, statistics, sys
logs, gpu = sys.argv[1], sys.argv[2]
def median_tps(name):
    path = f"{logs}/train_gpt2_{name}_metrics.jsonl"
    if not os.path.exists(path):
        return None
    recs = [json.loads(l) for l in open(path)]
    later = recs[1:]  # the first interval holds cuBLASLt's heuristics and the first steps
    tps = statistics.median(r["tokens_per_s"] for r in later)
    mfu = statistics.median(r["mfu"] for r in later) if "mfu" in later[-1] else float("nan")
    print(f"trainer {name} on {gpu}: median tokens/s {tps:,.0f} MFU {mfu:.3f} over {len(later)} log intervals; "
          f"final train loss {recs[-1]['train_loss']:.3f}")
    return tps
base = median_tps("adamw")
for name in ("muon", "muon_hardcap"):
    t = median_tps(name)
    if t and base:
        print(f"  {name} / adamw = {t / base:.3f} ({1e3 * 64 * 1024 / t:.1f} vs {1e3 * 64 * 1024 / base:.1f} ms per 64K tokens)")
m = re.search(r"tokens_s=(\d+)", open(f"{logs}/train_gpt2_bench.txt").read())
if m and base:
    bench = float(m.group(1))
    print(f"gpt_step_bench: tokens/s {bench:,.0f}; trainer (adamw) / bench = {base / bench:.3f}")
PY
exit $fail
