#!/usr/bin/env bash
# Everything the GPU machine checks, in one call: the whole GPU test suite (scripts/gpu_check.sh,
# which builds), then the benchmarks beside their baselines, each stage's console in its own log,
# all of them packed into one archive, gpu_all.tgz, in $OUT (the device tool brings back only a
# few files), with a summary of every stage's result lines on the console. Stages, in order, all
# by default:
#   tests      GPU_CHECK_BENCH=none scripts/gpu_check.sh          (~2 min with the build)
#   gpt2       GPU_TESTS=none scripts/bench_gpt2.sh 64 50 10      (ours vs torch.compile, ~1.5 min)
#   lipschitz  scripts/bench_lipschitz_gpt2.sh 24 12               (~2 min)
#   moe        scripts/bench_moe.sh                                (dense vs MoE trainers + block)
#   attention  scripts/bench_attention.sh    (its tests and sanitizer runs, then ours vs SDPA)
#   profile    scripts/profile_step.sh       (not by default: every kernel of one GPT-2 step, ncu)
#   gelu       scripts/bench_gelu_gemm.sh    (not by default: kernels/gelu_gemm's tests, kernels, step)
#   gelu_ncu   scripts/profile_gelu_gemm.sh  (not by default: ncu's full report on ours and cuBLASLt's)
#   variants   scripts/bench_step_variants.sh (not by default: the step under gpt_step_bench's options,
#              alternated; VARIANTS="opt ..." picks them, else its defaults)
#   kernels    scripts/bench_kernels.sh      (not by default: kernels_bench's parts, KERNELS="part ..."
#              picks them, else norm and mlp)
#   usage: scripts/gpu_all.sh [stage]...
# Exits non-zero when a stage fails; the later stages still run.
set -uo pipefail
cd "$(dirname "$0")/.."
FINAL=${OUT:-build-gpu/logs}
mkdir -p "$FINAL"
OUT=$(mktemp -d)
export OUT
stages=("$@")
((${#stages[@]})) || stages=(tests gpt2 lipschitz moe attention)
failed=()
for s in "${stages[@]}"; do
  echo "==== $s ($(date -u +%H:%M:%S))"
  case $s in
    tests) GPU_CHECK_BENCH=none bash scripts/gpu_check.sh > "$OUT/all_tests.txt" 2>&1 ;;
    gpt2) GPU_TESTS=none bash scripts/bench_gpt2.sh 64 50 10 > "$OUT/all_gpt2.txt" 2>&1 ;;
    lipschitz) bash scripts/bench_lipschitz_gpt2.sh 24 12 > "$OUT/all_lipschitz.txt" 2>&1 ;;
    moe) bash scripts/bench_moe.sh > "$OUT/all_moe.txt" 2>&1 ;;
    attention) bash scripts/bench_attention.sh > "$OUT/all_attention.txt" 2>&1 ;;
    profile) bash scripts/profile_step.sh > "$OUT/all_profile.txt" 2>&1 ;;
    gelu) bash scripts/bench_gelu_gemm.sh > "$OUT/all_gelu.txt" 2>&1 ;;
    gelu_ncu) bash scripts/profile_gelu_gemm.sh > "$OUT/all_gelu_ncu.txt" 2>&1 ;;
    variants) bash scripts/bench_step_variants.sh ${VARIANTS:-} > "$OUT/all_variants.txt" 2>&1 ;;
    kernels) bash scripts/bench_kernels.sh ${KERNELS:-} > "$OUT/all_kernels.txt" 2>&1 ;;
    *) echo "gpu_all.sh: unknown stage '$s' (expected tests, gpt2, lipschitz, moe, attention, profile, gelu, gelu_ncu, variants or kernels)" >&2; exit 2 ;;
  esac
  rc=$?
  echo "==== $s: rc=$rc"
  ((rc == 0)) || failed+=("$s(rc=$rc)")
  # The result lines: test totals and failures, and each benchmark's summary.
  grep -hE "FAILED|test cases|assertions|ratio|tokens/s|ours B=|torch B=| power: |x dense|per token|overhead|inspect:|certificate|^mlp|^norm_bwd|^== ncu|^  [a-z_]|Duration|Throughput|Issue Slots" \
    "$OUT/all_$s.txt" | head -n 40
done
tar -czf "$FINAL/gpu_all.tgz" -C "$OUT" .
echo "logs: $FINAL/gpu_all.tgz"
if ((${#failed[@]})); then
  echo "gpu_all.sh: failed: ${failed[*]}"
  exit 1
fi
