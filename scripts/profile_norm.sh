#!/usr/bin/env bash
# The norm backward at GPT-2's B = 64 (kernels_bench norm: 65536 rows of 768, the blocks' call
# with the accumulated input gradient and the parameter sums): its timings, then Nsight Compute's
# full report on one launch of the default (warp-ring) kernel (kernels/norm.cu), to see what
# holds it below the DRAM bandwidth (throughputs, warp stall reasons, and by instruction:
# scripts/ncu_stalls.py on the SASS source page). Details pages to $OUT (else $BUILD_DIR/logs).
#   usage: scripts/profile_norm.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_build.sh
gpu_build norm_ncu kernels_bench
"$BUILD_DIR/kernels_bench" norm 2>&1 | tee "$LOGS/norm_bench.txt"
echo "== ncu: norm_bwd_warp_ring_kernel"
ncu --set full --import-source no -k regex:norm_bwd_warp_ring -c 1 -o "$LOGS/ncu_norm" "$BUILD_DIR/kernels_bench" norm \
  > "$LOGS/ncu_norm_run.txt" 2>&1 || { echo "ncu failed"; tail -n 5 "$LOGS/ncu_norm_run.txt"; exit 1; }
ncu -i "$LOGS/ncu_norm.ncu-rep" --page details > "$LOGS/ncu_norm.txt" 2>&1
grep -E "Duration|SM Frequency|DRAM Frequency|Compute \(SM\) Throughput|Memory Throughput|L1/TEX Cache Throughput|L2 Cache Throughput|DRAM Throughput|Issue Slots Busy|Registers Per|Achieved Occupancy|Theoretical Occupancy|Stall|stall" \
  "$LOGS/ncu_norm.txt" | head -n 40
ncu -i "$LOGS/ncu_norm.ncu-rep" --page source --csv --print-source sass > "$LOGS/ncu_norm_sass.csv" 2>&1 &&
  python3 scripts/ncu_stalls.py "$LOGS/ncu_norm_sass.csv" 12
