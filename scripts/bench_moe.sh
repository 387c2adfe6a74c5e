#!/usr/bin/env bash
# The MoE benchmark of issue 7, on a GPU machine: configs/moe-gpt2.json (12 layers, every other
# MLP a 64-expert top-2 MoE, ~124M active parameters) against the dense GPT-2 124M of the same
# active size (configs/gpt2-124m.json), both through `polargpt train --device cuda` with the same
# tokens per step (B x 1024 per micro-batch, ACCUM micro-batches) on the bundled corpus, in the
# same call, once per ACCUM of the list: with the configs' own 16 micro-batches (0.5M tokens) the
# optimizer step is spread over many tokens; with 1 it weighs most, since AdamW then walks the
# ~1.0B MoE parameters (64x the expert weights) every 32K tokens. Then build-gpu/moe_bench: one
# MoE block against the dense MLP, fwd+bwd, and the routing + dispatch/combine kernels' share of
# the block. With MOE_PROFILE=1 and nsys on the machine, also the kernel-time table of the block
# (nsys over moe_bench's profiled range: 23 block steps).
# Prints each trainer's median tokens/s over the log intervals after the first, the MoE step's
# time per token over the dense one's (goal: at most 1.5), and the dispatch/combine share.
# Logs go to $OUT when set (else $BUILD_DIR/logs).
#   usage: scripts/bench_moe.sh [B=32] [accums="16 1"] [steps=10]
#          (steps per run; with ACCUM 1, 4x as many steps)
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_build.sh
B=${1:-32} ACCUMS=${2:-"16 1"} STEPS=${3:-10}
fail=0
echo "== build ($BUILD_DIR) $(date -u +%H:%M:%S)"
gpu_build moe polargpt moe_bench
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)

# train_run NAME CONFIG ACCUM: the trainer; metrics to $LOGS/moe_NAME_aACCUM_metrics.jsonl.
train_run() {
  local name=$1 config=$2 accum=$3 steps=$STEPS every=2 run
  if ((accum == 1)); then steps=$((4 * STEPS)) every=8; fi
  run=$(mktemp -d)/run
  echo "== trainer ($name): $config, $steps steps of $accum x $B x 1024 tokens on $GPU $(date -u +%H:%M:%S)"
  # The bundled val split is smaller than a batch: the one eval at the end reads the train split.
  "$BUILD_DIR/polargpt" train --config "$config" --device cuda --out "$run" \
    --set train.batch_size="$B" --set train.grad_accum="$accum" --set train.max_steps="$steps" \
    --set data.val="data/brown/brown_train_*.bin" --set train.eval_batches=1 \
    --set optim.warmup_steps=10 --set train.log_every="$every" --set train.eval_every=0 \
    --set train.checkpoint_every=0 2>&1 | tee "$LOGS/moe_${name}_a${accum}_trainer.txt" || fail=1
  cp "$run/metrics.jsonl" "$LOGS/moe_${name}_a${accum}_metrics.jsonl" 2>/dev/null
}
for a in $ACCUMS; do
  train_run dense configs/gpt2-124m.json "$a"
  train_run moe configs/moe-gpt2.json "$a"
done

echo "== moe_bench (one block, 8192 tokens) $(date -u +%H:%M:%S)"
"$BUILD_DIR/moe_bench" 2>&1 | tee "$LOGS/moe_bench.txt" || fail=1

if [[ ${MOE_PROFILE:-0} == 1 ]]; then
  if command -v nsys > /dev/null; then
    echo "== nsys: kernel times of the MoE block (23 fwd+bwd steps) $(date -u +%H:%M:%S)"
    nsys profile -o "$LOGS/moe_block" -f true --trace=cuda --capture-range=cudaProfilerApi \
      --capture-range-end=stop "$BUILD_DIR/moe_bench" > "$LOGS/moe_nsys_run.txt" 2>&1 || fail=1
    nsys stats -q -r cuda_gpu_kern_sum -f csv -o "$LOGS/moe_block" "$LOGS/moe_block.nsys-rep" \
      > "$LOGS/moe_nsys_stats.txt" 2>&1 || nsys stats -r gpukernsum "$LOGS/moe_block.nsys-rep" 2>&1 | tail -n 40
    rm -f "$LOGS/moe_block.sqlite"
    python3 - "$LOGS" <<'PY' || true
import csv, glob, sys
files = glob.glob(f"{sys.argv[1]}/moe_block*kern_sum*.csv")
if not files:
    sys.exit("no kernel table")
rows = list(csv.DictReader(open(files[0])))
tot = sum(float(r["Total Time (ns)"]) for r in rows)
print(f"{'us/step':>9} {'share':>6} {'calls/step':>10}  kernel  (total {tot / 23 / 1e3:.1f} us per block step)")
for r in rows[:25]:
    t = float(r["Total Time (ns)"])
    print(f"{t / 23 / 1e3:9.1f} {t / tot:6.3f} {int(r['Instances']) / 23:10.1f}  {r['Name'][:110]}")
PY
  else
    echo "(nsys not found: no kernel profile)"
  fi
fi

echo "== summary"
python3 - "$LOGS" "$GPU" "$B" "$ACCUMS" <<'PY' || fail=1
import json, os, re, statistics, sys
logs, gpu, B, accums = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split()
def median(name, accum):
    path = f"{logs}/moe_{name}_a{accum}_metrics.jsonl"
    if not os.path.exists(path):
        return None, None
    recs = [json.loads(l) for l in open(path)][1:]  # the first interval holds start-up
    tps = [r["tokens_per_s"] for r in recs if r.get("tokens_per_s")]
    return (statistics.median(tps) if tps else None), (recs[-1] if recs else None)
for a in accums:
    tokens = int(a) * B * 1024
    dense, _ = median("dense", a)
    moe, last = median("moe", a)
    print(f"-- {a} micro-batch(es) of {B} x 1024: {tokens:,} tokens per step, on {gpu}")
    for name, tps in (("dense GPT-2 124M", dense), ("moe-gpt2", moe)):
        print(f"{name}: median tokens/s {tps:,.0f} ({1e3 * tokens / tps:.1f} ms per step)" if tps else f"{name}: no figures")
    if dense and moe:
        print(f"moe time per token / dense = {dense / moe:.3f} (goal <= 1.5)")
    if last is not None and "moe_max_load" in last:
        print(f"moe-gpt2 last interval: max load {last['moe_max_load']:.2f} x uniform, "
              f"dropped {last.get('moe_dropped_frac', float('nan')):.3f}, train loss {last['train_loss']:.3f}")
text = open(f"{logs}/moe_bench.txt").read() if os.path.exists(f"{logs}/moe_bench.txt") else ""
d = re.search(r"dense .*fwdbwd_ms=([\d.]+)", text)
m = re.search(r"moe N=.*fwdbwd_ms=([\d.]+) ratio_to_dense=([\d.]+)", text)
s = re.search(r"moe_dispatch fwdbwd_ms=([\d.]+) share_of_moe=([\d.]+)", text)
if d and m:
    print(f"block (8192 tokens, fwd+bwd): dense MLP {d.group(1)} ms, MoE {m.group(1)} ms, ratio {m.group(2)}")
if s:
    print(f"routing + dispatch/combine kernels: {s.group(1)} ms, {float(s.group(2)):.3f} of the MoE block")
    # Their share of the trainer's step: per token as in the block bench (they scale with tokens),
    # times the 6 MoE layers of moe-gpt2, over the measured step time per token.
    for a in accums:
        moe, _ = median("moe", a)
        if moe:
            per_token = float(s.group(1)) * 1e-3 / 8192 * 6
            print(f"  share of the moe-gpt2 step ({a} micro-batches): {per_token * moe:.3f}")
PY
exit $fail
