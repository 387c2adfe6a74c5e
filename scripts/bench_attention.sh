#!/usr/bin/env bash
# Flash attention on a GPU machine in one go: builds (CMake, in $BUILD_DIR, default build-gpu,
# with .deps from scripts/vendor_deps.sh) the GPU tests and bench/attention_bench.cu, runs the
# attention tests, compute-sanitizer's memcheck and racecheck on the small reproducibility case
# and the pipelined forwards' case, bench/tma_probe.cu (the TMA tile copies against load_tile's
# layout), then the benchmark beside PyTorch's SDPA (bench/torch_attention.py) in the same call,
# and prints a table of ratios. Logs go to $OUT when set (else $BUILD_DIR/logs).
# scripts/gpu_check.sh runs it with GPU_CHECK_BENCH=all. ATTN_NCU=1 adds one Nsight Compute
# profile of each kernel.
#   usage: scripts/bench_attention.sh [B NH T hs]...   (default: 64 12 1024 64, 64 6 1024 128,
#                                                       16 12 1024 64)
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/torch/.venv/bin:/usr/local/cuda/bin:$PATH"
[[ -d .deps/lib ]] && export LD_LIBRARY_PATH="$PWD/.deps/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
BUILD_DIR=${BUILD_DIR:-build-gpu}
LOGS=${OUT:-$BUILD_DIR/logs}
mkdir -p "$LOGS"
PY=$(command -v python3)
fail=0
step() { echo "== $*"; }

step "build ($BUILD_DIR)"
if [[ ! -f $BUILD_DIR/build.ninja ]]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPOLARGPT_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90a}" > "$LOGS/attention_configure.txt" 2>&1 ||
    { tail -n 30 "$LOGS/attention_configure.txt"; exit 1; }
fi
ninja -C "$BUILD_DIR" polargpt_gpu_tests attention_bench > "$LOGS/attention_build.txt" 2>&1 ||
  { grep -E "error|FAILED" "$LOGS/attention_build.txt" | head -n 30; exit 1; }
TESTS=$BUILD_DIR/polargpt_gpu_tests
BENCH=$BUILD_DIR/attention_bench

step "tests [attention]"
"$TESTS" "[attention]" 2>&1 | tee "$LOGS/test_attention.txt" || fail=1
if command -v compute-sanitizer > /dev/null; then
  for tool in memcheck racecheck; do
    for filter in "*reproducible*" "*pipelined*"; do
      step "compute-sanitizer --tool $tool ($filter)"
      timeout 90 compute-sanitizer --tool $tool --error-exitcode 3 "$TESTS" "$filter" \
        > "$LOGS/sanitizer_${tool}_${filter//[^a-z]/}.txt" 2>&1
      rc=$?
      [[ $rc == 124 ]] && echo "(timed out: no verdict)"
      [[ $rc != 0 && $rc != 124 ]] && fail=1
      tail -n 3 "$LOGS/sanitizer_${tool}_${filter//[^a-z]/}.txt"
    done
  done
fi

step "TMA probe (bench/tma_probe.cu)"
nvcc -gencode arch=compute_90a,code=sm_90a -O2 -I. -o "$BUILD_DIR/tma_probe" bench/tma_probe.cu \
  > "$LOGS/tma_probe_build.txt" 2>&1 || { tail -n 20 "$LOGS/tma_probe_build.txt"; fail=1; }
[[ -x $BUILD_DIR/tma_probe ]] && { "$BUILD_DIR/tma_probe" 2>&1 | tee "$LOGS/tma_probe.txt" || fail=1; }

step "benchmark (ours, then PyTorch SDPA) on $(nvidia-smi --query-gpu=name --format=csv,noheader)"
"$BENCH" "$@" 2>&1 | tee "$LOGS/bench_attention.txt" || fail=1
PYTHONUNBUFFERED=1 "$PY" bench/torch_attention.py "$@" 2>&1 | tee -a "$LOGS/bench_attention.txt" ||
  fail=1

if [[ ${ATTN_NCU:-0} == 1 ]] && command -v ncu > /dev/null; then
  for kernel in fwd bwd; do  # one launch of each at B=16, NH=12, T=1024, hs=64
    step "ncu attention_${kernel}_kernel"
    timeout 120 ncu --section SpeedOfLight --section Occupancy --section WarpStateStats \
      --section LaunchStats -k "regex:attention_${kernel}_kernel" -c 1 \
      "$BENCH" 16 12 1024 64 > "$LOGS/ncu_$kernel.txt" 2>&1
    grep -E "Throughput|Duration|Achieved Occupancy|Registers Per|Warp Cycles Per Issued" \
      "$LOGS/ncu_$kernel.txt" | head -n 20
  done
fi

step "summary (time ratio ours / SDPA)"
grep -E "^(ours|sdpa)" "$LOGS/bench_attention.txt" | awk '
  { key = $2 " " $3 " " $4 " " $5; split($6, f, "="); split($8, a, "=")
    if ($1 == "ours") { of[key] = f[2]; oa[key] = a[2] } else { sf[key] = f[2]; sa[key] = a[2] } }
  END { for (k in of) if (k in sf)
          printf "%s  fwd %.3f ms vs SDPA %.3f (%.2fx)  fwd+bwd %.3f ms vs SDPA %.3f (%.2fx)\n",
                 k, of[k], sf[k], of[k] / sf[k], oa[k], sa[k], oa[k] / sa[k] }'
grep -E "test cases|assertions" "$LOGS/test_attention.txt"
exit $fail
