#!/usr/bin/env bash
# TEMPORARY: tests and benchmarks each attention tiling variant (POLARGPT_ATTN_FWD/BWD).
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_build.sh
VARIANTS=${VARIANTS:-0 1 2 3 4 5 6 7}
BENCH_VARIANTS=${BENCH_VARIANTS:-$VARIANTS}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$LOGS/gpu.txt"
t0=$SECONDS
gpu_build attn polargpt_gpu_tests attention_bench
echo "build $((SECONDS - t0)) s"
for v in $VARIANTS; do
  POLARGPT_ATTN_FWD=$v POLARGPT_ATTN_BWD=$v timeout 60 "$BUILD_DIR/polargpt_gpu_tests" "[attention]" > "$LOGS/test_v$v.txt" 2>&1
  echo "tests v$v rc=$? $(grep -E 'test cases|assertions' "$LOGS/test_v$v.txt" | tr '\n' ' ')"
done
echo "tests done $((SECONDS - t0)) s"
for v in $BENCH_VARIANTS; do
  POLARGPT_ATTN_FWD=$v POLARGPT_ATTN_BWD=$v "$BUILD_DIR/attention_bench" "$@" 2>&1 | sed "s/^ours/ours_v$v/" | tee -a "$LOGS/bench.txt"
done
PYTHONUNBUFFERED=1 python3 bench/torch_attention.py "$@" 2>&1 | tee -a "$LOGS/bench.txt"
echo "bench done $((SECONDS - t0)) s"
if [[ -n ${RACE:-} ]] && command -v compute-sanitizer > /dev/null; then
  for tool in memcheck racecheck; do
    POLARGPT_ATTN_FWD=$RACE POLARGPT_ATTN_BWD=$RACE timeout 50 compute-sanitizer --tool $tool --error-exitcode 3 \
      "$BUILD_DIR/polargpt_gpu_tests" "*reproducible*" > "$LOGS/sanitizer_$tool.txt" 2>&1
    echo "sanitizer $tool v$RACE rc=$? $(tail -n 2 "$LOGS/sanitizer_$tool.txt" | tr '\n' ' ')"
  done
fi
if [[ -n ${NCU:-} ]] && command -v ncu > /dev/null; then
  for kernel in fwd bwd; do
    POLARGPT_ATTN_FWD=$NCU POLARGPT_ATTN_BWD=$NCU timeout 40 ncu --section SpeedOfLight --section Occupancy --section WarpStateStats \
      --section LaunchStats -k "regex:attention_${kernel}_kernel" -c 1 \
      "$BUILD_DIR/attention_bench" 16 12 1024 64 > "$LOGS/ncu_$kernel.txt" 2>&1
    grep -E "Throughput|Duration|Achieved Occupancy|Registers Per|Warp Cycles Per Issued|Stall" "$LOGS/ncu_$kernel.txt" | head -n 24
  done
fi
echo "all done $((SECONDS - t0)) s"
