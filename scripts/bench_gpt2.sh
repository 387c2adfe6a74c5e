#!/usr/bin/env bash
# GPT-2 124M training step, ours against PyTorch, on a GPU machine in one go: builds (CMake, in
# $BUILD_DIR, default build-gpu, with .deps from scripts/vendor_deps.sh) the GPU tests and
# build-gpu/gpt_step_bench, runs the GPU tests (GPU_TESTS, default "[gpu]"; GPU_TESTS=none skips
# them), then our step and bench/torch_gpt2.py (torch.compile, bf16 autocast, SDPA, fused AdamW,
# from /opt/torch/.venv) at the same batch, and prints both and the ratio of tokens/s, with the
# board power and SM clock nvidia-smi sampled during each (the step runs at the power limit, so
# the clock it gets says how much energy a step takes).
# Logs go to $OUT when set (else $BUILD_DIR/logs).
#   usage: scripts/bench_gpt2.sh [B=64] [steps=50] [warmup=10]
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_build.sh
GPU_TESTS=${GPU_TESTS:-[gpu]}
B=${1:-64} STEPS=${2:-50} WARMUP=${3:-10}
fail=0
step() { echo "== $* ($(date -u +%H:%M:%S))"; }

step "build ($BUILD_DIR)"
gpu_build gpt2 polargpt_gpu_tests gpt_step_bench

if [[ $GPU_TESTS != none ]]; then
  step "GPU tests $GPU_TESTS"
  "$BUILD_DIR/polargpt_gpu_tests" "$GPU_TESTS" > "$LOGS/gpt2_tests.txt" 2>&1 || fail=1
  grep -E "FAILED|failed|test cases|assertions" "$LOGS/gpt2_tests.txt" | head -n 40
fi

GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
# Samples power (W) and SM clock (MHz) every 100 ms into $1 while the rest of the arguments run.
sampled() {
  local csv=$1
  shift
  nvidia-smi --query-gpu=power.draw,clocks.sm --format=csv,noheader,nounits -lms 100 > "$csv" 2>/dev/null &
  local smi=$!
  "$@"
  local rc=$?
  kill "$smi" 2>/dev/null
  wait "$smi" 2>/dev/null
  return $rc
}
# The samples drawing over half the largest power seen (the timed steps, not start-up or compile).
power_summary() {
  awk -F', *' -v who="$1" '$1 + 0 > 0 { p[NR] = $1; c[NR] = $2; if ($1 > max) max = $1 }
    END { for (i in p) if (p[i] > max / 2) { n++; sp += p[i]; sc += c[i] }
          if (n) printf "%s power: %.0f W mean, SM clock %.0f MHz mean, %d samples of 100 ms\n", who, sp / n, sc / n, n
          else printf "%s power: no samples\n", who }' "$2"
}
step "ours: gpt_step_bench $B $STEPS $WARMUP on $GPU"
sampled "$LOGS/gpt2_ours_power.csv" "$BUILD_DIR/gpt_step_bench" "$B" "$STEPS" "$WARMUP" > "$LOGS/gpt2_ours.txt" 2>&1 ||
  fail=1
cat "$LOGS/gpt2_ours.txt"
step "PyTorch: bench/torch_gpt2.py $B $STEPS $WARMUP"
PYTHONUNBUFFERED=1 sampled "$LOGS/gpt2_torch_power.csv" python3 bench/torch_gpt2.py "$B" "$STEPS" "$WARMUP" \
  > "$LOGS/gpt2_torch.txt" 2>&1 || fail=1
grep -vE "^\s*$" "$LOGS/gpt2_torch.txt" | tail -n 5

step "summary"
ours=$(grep -oE "^ours .*tokens_s=[0-9]+" "$LOGS/gpt2_ours.txt" | grep -oE "[0-9]+$")
theirs=$(grep -oE "^torch B=.*tokens_s=[0-9]+" "$LOGS/gpt2_torch.txt" | grep -oE "[0-9]+$")
grep -hE "^(ours|torch) B=" "$LOGS/gpt2_ours.txt" "$LOGS/gpt2_torch.txt"
power_summary ours "$LOGS/gpt2_ours_power.csv"
power_summary torch "$LOGS/gpt2_torch_power.csv"
if [[ -n $ours && -n $theirs ]]; then
  awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "ratio ours/torch tokens/s = %.3f\n", a / b }'
else
  echo "no ratio: a benchmark printed no result"
  fail=1
fi
exit $fail
