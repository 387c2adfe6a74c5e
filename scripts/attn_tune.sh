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
  for v in $NCU; do
    POLARGPT_ATTN_FWD=$v POLARGPT_ATTN_BWD=$v timeout 60 ncu --section SpeedOfLight --section WarpStateStats \
      --section MemoryWorkloadAnalysis_Tables --section ComputeWorkloadAnalysis --print-details all \
      -k "regex:attention_bwd_kernel" -c 1 "$BUILD_DIR/attention_bench" 16 12 1024 64 > "$LOGS/ncu_bwd_v$v.txt" 2>&1
    echo "ncu bwd v$v rc=$?"
    grep -iE "Throughput|Duration|Stall|Bank|Wavefront|Pipe|Issue" "$LOGS/ncu_bwd_v$v.txt" | head -n 60
  done
  v=${NCU%% *}
  POLARGPT_ATTN_FWD=$v POLARGPT_ATTN_BWD=$v timeout 40 ncu --metrics \
smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio,smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_short_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_mio_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_math_pipe_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_wait_per_issue_active.ratio,smsp__average_warps_issue_stalled_lg_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_not_selected_per_issue_active.ratio,smsp__average_warps_issue_stalled_selected_per_issue_active.ratio,smsp__average_warps_issue_stalled_dispatch_stall_per_issue_active.ratio,smsp__average_warps_issue_stalled_membar_per_issue_active.ratio,smsp__average_warps_issue_stalled_drain_per_issue_active.ratio,smsp__average_warps_issue_stalled_imc_miss_per_issue_active.ratio,smsp__average_warps_issue_stalled_no_instruction_per_issue_active.ratio,smsp__average_warps_issue_stalled_branch_resolving_per_issue_active.ratio,smsp__average_warps_issue_stalled_tex_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_sleeping_per_issue_active.ratio \
      -k "regex:attention_(fwd|bwd)_kernel" -c 2 "$BUILD_DIR/attention_bench" 16 12 1024 64 > "$LOGS/ncu_stalls.txt" 2>&1
  echo "ncu stalls rc=$?"
  grep -E "attention_|stalled" "$LOGS/ncu_stalls.txt" | sed -E 's/smsp__average_warps_issue_stalled_//; s/_per_issue_active.ratio//' | head -n 40
fi
echo "all done $((SECONDS - t0)) s"
