#!/usr/bin/env bash
# The GPT-2 step (gpt_step_bench 64 30 5, B = 64) under each of the given options, alternated
# twice, to set variants of the step side by side in one call (same GPU, same clocks and power
# regime). Options as gpt_step_bench takes them: heuristic (the model's defaults), tuned,
# cublas_gelu, gelu_gemm_bwd, norm_residual, graph, gelu_pair, dq_acc_workspace,
# norm_group. Logs in $OUT (else $BUILD_DIR/logs).
#   usage: scripts/bench_step_variants.sh [option]...   (default: heuristic norm_residual)
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_build.sh
variants=("$@")
((${#variants[@]})) || variants=(heuristic norm_residual)
gpu_build variants gpt_step_bench
fail=0
echo "== gpt_step_bench 64 30 5 on $(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1): ${variants[*]}"
for run in 1 2; do
  for v in "${variants[@]}"; do
    "$BUILD_DIR/gpt_step_bench" 64 30 5 gpt "$v" 2>&1 | grep -E "^ours|rror" | tee -a "$LOGS/variants_step.txt" || fail=1
  done
done
exit $fail
