#!/usr/bin/env bash
# GPT-2 124M training step, ours against PyTorch, on a GPU machine in one go: builds (CMake, in
# $BUILD_DIR, default build-gpu, with .deps from scripts/vendor_deps.sh) the GPU tests and
# build-gpu/gpt_step_bench, runs the GPU tests (GPU_TESTS, default "[gpu]"; GPU_TESTS=none skips
# them), then our step and bench/torch_gpt2.py (torch.compile, bf16 autocast, SDPA, fused AdamW,
# from /opt/torch/.venv) at the same batch, and prints both and the ratio of tokens/s.
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
step "ours: gpt_step_bench $B $STEPS $WARMUP on $GPU"
"$BUILD_DIR/gpt_step_bench" "$B" "$STEPS" "$WARMUP" 2>&1 | tee "$LOGS/gpt2_ours.txt" || fail=1
step "PyTorch: bench/torch_gpt2.py $B $STEPS $WARMUP"
PYTHONUNBUFFERED=1 python3 bench/torch_gpt2.py "$B" "$STEPS" "$WARMUP" 2>&1 | tee "$LOGS/gpt2_torch.txt" |
  grep -vE "^\s*$" | tail -n 5 || fail=1

step "summary"
ours=$(grep -oE "^ours .*tokens_s=[0-9]+" "$LOGS/gpt2_ours.txt" | grep -oE "[0-9]+$")
theirs=$(grep -oE "^torch B=.*tokens_s=[0-9]+" "$LOGS/gpt2_torch.txt" | grep -oE "[0-9]+$")
grep -hE "^(ours|torch) B=" "$LOGS/gpt2_ours.txt" "$LOGS/gpt2_torch.txt"
if [[ -n $ours && -n $theirs ]]; then
  awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "ratio ours/torch tokens/s = %.3f\n", a / b }'
else
  echo "no ratio: a benchmark printed no result"
  fail=1
fi
exit $fail
