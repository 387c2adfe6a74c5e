#!/usr/bin/env bash
# Nsight Compute's full report on the MLP's GELU GEMMs at GPT-2's B = 64 (kernels_bench mlp's
# shapes): ours (kernels/gelu_gemm.cuh: the forward and the GELU gradient, one launch each, and the
# forward on clusters of two) beside cuBLASLt's plain GEMM of the shape
# and its GELU_AUX_BIAS kernel, to see which unit limits each (tensor pipe, shared memory, L2,
# issue), and where each one's warps wait by instruction (scripts/ncu_stalls.py). The details
# pages go to $OUT (else $BUILD_DIR/logs).
#   usage: scripts/profile_gelu_gemm.sh [name...]   (default: all of ours_fwd ours_dgelu
#          ours_fwd_pair cublas_plain cublas_geluaux; GELU_NCU=names does the same
#          for gpu_all.sh)
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_build.sh
gpu_build gelu_ncu kernels_bench
fail=0
wanted=("$@")
((${#wanted[@]})) || read -ra wanted <<< "${GELU_NCU:-ours_fwd ours_dgelu ours_fwd_pair cublas_plain cublas_geluaux}"
profile() {  # name, then ncu's kernel filter arguments
  local name=$1
  shift
  [[ " ${wanted[*]} " == *" $name "* ]] || return 0
  echo "== ncu: $name"
  ncu --set full --import-source no "$@" -c 1 -o "$LOGS/ncu_$name" "$BUILD_DIR/kernels_bench" mlp \
    > "$LOGS/ncu_${name}_run.txt" 2>&1 || { echo "ncu failed"; tail -n 5 "$LOGS/ncu_${name}_run.txt"; fail=1; return; }
  ncu -i "$LOGS/ncu_$name.ncu-rep" --page details > "$LOGS/ncu_$name.txt" 2>&1
  grep -E "^  [a-z_]|Duration|SM Frequency|Compute \(SM\) Throughput|Memory Throughput|L1/TEX Cache Throughput|L2 Cache Throughput|DRAM Throughput|Issue Slots Busy|Registers Per|Achieved Occupancy" \
    "$LOGS/ncu_$name.txt" | head -n 16
  # Where its warps wait, by instruction (the SASS source page).
  ncu -i "$LOGS/ncu_$name.ncu-rep" --page source --csv --print-source sass > "$LOGS/ncu_${name}_sass.csv" 2>&1 &&
    python3 scripts/ncu_stalls.py "$LOGS/ncu_${name}_sass.csv" 12
}
profile ours_fwd --kernel-name-base mangled -k regex:gelu_gemm_kernelILb0ELb0E
profile ours_dgelu --kernel-name-base mangled -k regex:gelu_gemm_kernelILb1ELb0E
profile ours_fwd_pair --kernel-name-base mangled -k regex:gelu_gemm_kernelILb0ELb1E
profile cublas_plain -k regex:nvjet
profile cublas_geluaux -k regex:geluaux
exit $fail
