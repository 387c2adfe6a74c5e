#!/usr/bin/env bash
# Nsight Compute sections of the attention backward kernels at GPT-2's shape (B 64, NH 12, T 1024,
# hs 64), one launch of each variant attention_bench times: the launch order there is the
# forwards (Best, WgmmaPipe), then forward + backward with Best and MmaSync, each 35 times.
# Logs in $OUT (else build-gpu/logs).
#   usage: scripts/profile_attention.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_build.sh
gpu_build profile_attention attention_bench
sections=(--section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis
  --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats)
ncu --kernel-name regex:attention_bwd_wg_kernel --launch-count 1 "${sections[@]}" \
  "$BUILD_DIR/attention_bench" 64 12 1024 64 > "$LOGS/ncu_bwd_best.txt" 2>&1
ncu --kernel-name regex:"attention_bwd_kernel" --launch-count 1 "${sections[@]}" \
  "$BUILD_DIR/attention_bench" 64 12 1024 64 > "$LOGS/ncu_bwd_mmasync.txt" 2>&1
for f in best mmasync; do
  echo "== $f"
  grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|Issue Slots Busy|Warp Cycles Per Issued|Registers Per|Achieved Occupancy|Stall|L2 Hit" "$LOGS/ncu_bwd_$f.txt" | head -n 20
done
# Stall reasons and the tensor pipe of the wgmma backward, and its SASS (instruction mix).
if [[ ${ATTN_STALLS:-0} == 1 ]]; then
  ncu --kernel-name regex:attention_bwd_wg_kernel --launch-skip 5 --launch-count 1 \
    --metrics "regex:^smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio$,sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_elapsed,smsp__inst_executed.sum,sm__cycles_elapsed.avg,smsp__inst_executed_pipe_alu.sum,smsp__inst_executed_pipe_fma.sum,smsp__inst_executed_pipe_xu.sum,smsp__inst_executed_pipe_lsu.sum,smsp__inst_executed_pipe_uniform.sum" \
    "$BUILD_DIR/attention_bench" 64 12 1024 64 > "$LOGS/ncu_bwd_stalls.txt" 2>&1
  grep -vE "^\s*$" "$LOGS/ncu_bwd_stalls.txt" | grep -E "stalled|pipe|inst_executed|cycles" | awk '$NF+0 > 0.05 || /pipe|inst|cycles/'
  cuobjdump -sass "$BUILD_DIR/attention_bench" 2>&1 | gzip > "$LOGS/attention_bench.sass.gz"
  ls -la "$LOGS/attention_bench.sass.gz"
fi
