#!/usr/bin/env bash
# configs/lipschitz-gpt2.json through the real trainer on the GPU, as shipped (Muon, hard cap of
# every hidden matrix and of the head at fp16 after every optimizer step, 16 micro-batches of
# 32 x 1024 per step, sigma_max monitor), on the bundled corpus for STEPS optimizer steps, beside
# the same run with spectral.method=none and no monitor. Prints:
#   - both runs' median tokens/s and the ratio: what projection + monitor cost inside the step loop
#     (the monitor runs every MONITOR steps here, more often than the config's 100, so the figure
#     is an upper bound for the config);
#   - the final checkpoint's `polargpt inspect`: every constrained matrix's measured sigma_max
#     against its w_max, failing when one exceeds w_max (1 + 1e-2), and the certificate;
#   - lipschitz_bound from metrics.jsonl.
# Logs go to $OUT when set (else $BUILD_DIR/logs).
#   usage: scripts/bench_lipschitz_gpt2.sh [steps=24] [monitor_every=12]
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_build.sh
STEPS=${1:-24} MONITOR=${2:-12}
fail=0
echo "== build ($BUILD_DIR) $(date -u +%H:%M:%S)"
gpu_build lipschitz_gpt2 polargpt
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
WORK=$(mktemp -d)

# run NAME SET...: the trainer on configs/lipschitz-gpt2.json with extra --set flags.
run() {
  local name=$1
  shift
  echo "== trainer ($name) on $GPU: $STEPS steps $* $(date -u +%H:%M:%S)"
  "$BUILD_DIR/polargpt" train --config configs/lipschitz-gpt2.json --device cuda --out "$WORK/$name" \
    --set data.train="data/brown/brown_train_*.bin" --set data.val="data/brown/brown_val_*.bin" \
    --set train.max_steps="$STEPS" --set optim.warmup_steps=4 --set optim.warmdown_steps="$STEPS" \
    --set train.log_every=4 --set train.eval_every="$STEPS" --set train.eval_batches=1 \
    --set train.checkpoint_every="$STEPS" "$@" 2>&1 | tee "$LOGS/lipschitz_gpt2_${name}.txt" || fail=1
  cp "$WORK/$name/metrics.jsonl" "$LOGS/lipschitz_gpt2_${name}_metrics.jsonl" 2>/dev/null
}
run hardcap --set spectral.monitor_every="$MONITOR"
run none --set spectral.method=none --set spectral.monitor_every=0

echo "== inspect (hardcap run's last checkpoint)"
"$BUILD_DIR/polargpt" inspect --ckpt "$WORK/hardcap" --json > "$LOGS/lipschitz_gpt2_inspect.json" || fail=1

echo "== summary"
python3 - "$LOGS" "$GPU" "$STEPS" <<'PY' || fail=1
import json, statistics, sys
logs, gpu, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
def metrics(name):
    return [json.loads(l) for l in open(f"{logs}/lipschitz_gpt2_{name}_metrics.jsonl")]
tps = {}
for name in ("hardcap", "none"):
    recs = [r for r in metrics(name) if "tokens_per_s" in r]
    later = recs[1:]  # the first interval holds the start-up
    tps[name] = statistics.median(r["tokens_per_s"] for r in later)
    last = recs[-1]
    bound = [r for r in metrics(name) if "lipschitz_bound" in r]
    extra = f", lipschitz_bound {bound[-1]['lipschitz_bound']:.4g}" if bound else ""
    print(f"{name}: median tokens/s {tps[name]:,.0f} over {len(later)} log intervals, "
          f"train loss {last['train_loss']:.3f} at step {last['step']}{extra}")
print(f"hardcap + monitor / none = {tps['hardcap'] / tps['none']:.4f} "
      f"(overhead {100 * (1 - tps['hardcap'] / tps['none']):.2f}% of the step) on {gpu}")
d = json.load(open(f"{logs}/lipschitz_gpt2_inspect.json"))
bad = 0
capped = [m for m in d["matrices"] if "w_max" in m]
worst = max(capped, key=lambda m: m["sigma_max"] / m["w_max"])
for m in capped:
    if m["sigma_max"] > m["w_max"] * (1 + 1e-2):
        bad += 1
        print(f"  OVER: {m['name']} sigma_max {m['sigma_max']:.5f} > w_max {m['w_max']}")
print(f"inspect: {len(capped)} constrained matrices, worst sigma_max / w_max = "
      f"{worst['sigma_max'] / worst['w_max']:.5f} ({worst['name']}); {bad} above w_max (1 + 1e-2)")
print("certificate:", json.dumps(d["certificate"]))
sys.exit(1 if bad or not capped else 0)
PY
exit $fail
