#!/usr/bin/env bash
# Where one GPT-2 124M training step's GPU time goes, at the clocks the timed runs see: builds
# gpt_step_bench, runs one step (B, default 64) under Nsight Compute with only the kernel
# duration metric and no clock control, and sums the kernels by name and by group
# (scripts/profile_summary.py). ncu runs the kernels one at a time, so the sum is the GPU's busy
# time without overlap, and each kernel alone runs at the boost clock; the timed step beside it
# (same binary, no profiler) runs at the board's power limit, at lower clocks (bench/RESULTS.md,
# 2026-12-03: 1455-1710 MHz against 1980), so it takes longer than the sum.
# Logs go to $OUT when set (else $BUILD_DIR/logs).
#   usage: scripts/profile_step.sh [B=64] [variant=gpt]
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_build.sh
B=${1:-64} VARIANT=${2:-gpt}
gpu_build profile gpt_step_bench
echo "== timed: gpt_step_bench $B 20 5 $VARIANT"
"$BUILD_DIR/gpt_step_bench" "$B" 20 5 "$VARIANT" 2>&1 | tee "$LOGS/profile_timed.txt"
echo "== ncu: one step"
ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
  "$BUILD_DIR/gpt_step_bench" "$B" 1 0 "$VARIANT" > "$LOGS/profile_ncu.csv" 2> "$LOGS/profile_ncu_err.txt" ||
  { echo "ncu failed"; tail -n 20 "$LOGS/profile_ncu_err.txt"; exit 1; }
python3 scripts/profile_summary.py "$LOGS/profile_ncu.csv" | tee "$LOGS/profile_summary.txt"
