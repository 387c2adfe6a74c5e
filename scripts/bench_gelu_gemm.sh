#!/usr/bin/env bash
# The MLP's GELU GEMMs of kernels/gelu_gemm.cuh on a GPU machine in one go: builds (scripts/
# gpu_build.sh), runs their tests ([gelu_gemm], then compute-sanitizer's memcheck and racecheck on
# them), kernels_bench mlp (ours, on single CTAs and on clusters of two, beside cuBLASLt's GELU
# epilogues and plain GEMMs of the shape), then the GPT-2 step with cuBLASLt's epilogues, with ours
# for the backward only, with ours for both (the default) and with ours on clusters of two,
# alternated twice (scripts/bench_step_variants.sh cublas_gelu gelu_gemm_bwd heuristic gelu_pair).
# Logs in $OUT (else $BUILD_DIR/logs).
#   usage: scripts/bench_gelu_gemm.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_build.sh
fail=0
step() { echo "== $* ($(date -u +%H:%M:%S))"; }

step "build ($BUILD_DIR)"
gpu_build gelu polargpt_gpu_tests kernels_bench
step "tests [gelu_gemm]"
timeout 120 "$BUILD_DIR/polargpt_gpu_tests" "[gelu_gemm]" > "$LOGS/gelu_tests.txt" 2>&1 || fail=1
grep -E "FAILED|failed|passed|assertions" "$LOGS/gelu_tests.txt" | head -n 20
for tool in memcheck racecheck; do
  step "compute-sanitizer --tool $tool [gelu_gemm]"
  timeout 300 compute-sanitizer --tool $tool --error-exitcode 3 "$BUILD_DIR/polargpt_gpu_tests" "[gelu_gemm]" \
    > "$LOGS/gelu_$tool.txt" 2>&1
  rc=$?
  ((rc == 124)) && echo "(timed out: no verdict)"
  ((rc != 0 && rc != 124)) && fail=1
  tail -n 2 "$LOGS/gelu_$tool.txt"
done
step "kernels_bench mlp on $(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)"
"$BUILD_DIR/kernels_bench" mlp 2>&1 | tee "$LOGS/gelu_mlp.txt" || fail=1
step "gpt_step_bench 64 30 5: cuBLASLt's epilogues / ours for the backward / ours for both / ours on pairs"
bash scripts/bench_step_variants.sh cublas_gelu gelu_gemm_bwd heuristic gelu_pair || fail=1
exit $fail
