#!/usr/bin/env bash
# kernels_bench's parts on a GPU machine in one go: builds it (scripts/gpu_build.sh) and runs each
# part given (default: norm mlp; kernels_bench's parts are gemm, classifier, norm, bias, mlp), each
# part's console in $OUT/kernels_PART.txt (else $BUILD_DIR/logs).
#   usage: scripts/bench_kernels.sh [part]...
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_build.sh
parts=("$@")
((${#parts[@]})) || parts=(norm mlp)
gpu_build kernels kernels_bench
fail=0
for p in "${parts[@]}"; do
  echo "== kernels_bench $p ($(date -u +%H:%M:%S))"
  "$BUILD_DIR/kernels_bench" "$p" 2>&1 | tee "$LOGS/kernels_$p.txt" || fail=1
done
exit $fail
