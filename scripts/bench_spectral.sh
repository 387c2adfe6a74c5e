#!/usr/bin/env bash
# Spectral projection + monitor cost against the GPT-2 124M training step, on a GPU machine in one
# go: builds (CMake, in $BUILD_DIR, default build-gpu, with .deps from scripts/vendor_deps.sh)
# build-gpu/spectral_bench and runs it on configs/lipschitz-gpt2.json's matrices: per method and
# spectral.precision the projection's median ms, as % of one micro-step at batch B and of the
# config's optimizer step (grad_accum micro-steps), then the monitor and the certificate.
# Logs go to $OUT when set (else $BUILD_DIR/logs).
#   usage: scripts/bench_spectral.sh [B=32] [reps=10] [config=configs/lipschitz-gpt2.json]
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_build.sh
B=${1:-32} REPS=${2:-10} CONFIG=${3:-configs/lipschitz-gpt2.json}

echo "== build ($BUILD_DIR) $(date -u +%H:%M:%S)"
gpu_build spectral spectral_bench
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
echo "== spectral_bench $B $REPS $CONFIG on $GPU $(date -u +%H:%M:%S)"
"$BUILD_DIR/spectral_bench" "$B" "$REPS" "$CONFIG" 2>&1 | tee "$LOGS/spectral_bench.txt"
exit "${PIPESTATUS[0]}"
