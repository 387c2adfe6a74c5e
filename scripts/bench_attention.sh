#!/usr/bin/env bash
# Flash attention on a GPU machine in one go, independent of the CMake build: compiles
# kernels/attention.cu, its test (tests/gpu/test_attention.cpp, with the CPU reference) and
# bench/bench_attention.cu with nvcc; runs the test, compute-sanitizer's memcheck and racecheck on
# a small case, then the benchmark beside PyTorch's SDPA (bench/torch_attention.py) in the same
# call. Logs go to $OUT when set (else build/attn). Needs Catch2 v2 (catch2/catch.hpp) on the
# include path or in .deps/include (scripts/vendor_deps.sh).
#   usage: scripts/bench_attention.sh [B NH T hs]...
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=build/attn
LOGS=${OUT:-$BUILD}
mkdir -p "$BUILD" "$LOGS"
PY=${PYTHON:-$(command -v /opt/torch/.venv/bin/python3 || command -v python3)}
FLAGS=(-std=c++20 -O3 -arch=sm_90 -I src -I tests -I .)
[ -d .deps/include ] && FLAGS=(-isystem .deps/include "${FLAGS[@]}")

step() { echo "== $*"; }
fail=0
pids=()
compile() {  # compile SRC OBJ [extra flags]: in the background
  local src=$1 obj=$2
  shift 2
  nvcc "${FLAGS[@]}" "$@" -c "$src" -o "$obj" &
  pids+=($!)
}
step "build"
compile kernels/attention.cu "$BUILD/attention.o" -Xptxas -v
compile bench/bench_attention.cu "$BUILD/bench_attention.o"
compile tests/gpu/test_attention.cpp "$BUILD/test_attention.o" -Xcompiler -Wall,-Wextra
compile tests/main.cpp "$BUILD/main.o"
compile src/backend/cpu/attention.cpp "$BUILD/cpu_attention.o"
compile src/backend/cpu/parallel.cpp "$BUILD/parallel.o"
for p in "${pids[@]}"; do wait "$p" || fail=1; done
[ $fail = 0 ] || { echo "build failed"; exit 1; }
nvcc -arch=sm_90 -o "$BUILD/test_attention" "$BUILD"/{main,test_attention,cpu_attention,parallel,attention}.o -lpthread || exit 1
nvcc -arch=sm_90 -o "$BUILD/bench_attention" "$BUILD"/{bench_attention,attention}.o || exit 1
cuobjdump --dump-sass "$BUILD/attention.o" > "$LOGS/attention_sass.txt" 2>&1 &&
  echo "HMMA instructions in attention.o: $(grep -c HMMA "$LOGS/attention_sass.txt")"

step "tests"
"$BUILD/test_attention" 2>&1 | tee "$LOGS/test_attention.txt" || fail=1
if command -v compute-sanitizer > /dev/null; then
  for tool in memcheck racecheck; do
    step "compute-sanitizer --tool $tool (determinism case)"
    timeout 90 compute-sanitizer --tool $tool --error-exitcode 3 "$BUILD/test_attention" \
      "*reproducible*" > "$LOGS/sanitizer_$tool.txt" 2>&1
    rc=$?
    [ $rc = 124 ] && echo "(timed out: no verdict)"
    [ $rc != 0 ] && [ $rc != 124 ] && fail=1
    tail -n 3 "$LOGS/sanitizer_$tool.txt"
  done
fi

step "benchmark (ours, then PyTorch SDPA) on $(nvidia-smi --query-gpu=name --format=csv,noheader)"
"$BUILD/bench_attention" "$@" 2>&1 | tee "$LOGS/bench_attention.txt" || fail=1
PYTHONUNBUFFERED=1 "$PY" bench/torch_attention.py "$@" 2>&1 | tee -a "$LOGS/bench_attention.txt" || fail=1

if [ "${ATTN_NCU:-0}" = 1 ] && command -v ncu > /dev/null; then
  for kernel in fwd bwd; do  # one launch of each at B=16, NH=12, T=1024, hs=64
    step "ncu attention_${kernel}_kernel"
    timeout 120 ncu --section SpeedOfLight --section Occupancy --section WarpStateStats \
      --section LaunchStats -k "regex:attention_${kernel}_kernel" -c 1 \
      "$BUILD/bench_attention" 16 12 1024 64 > "$LOGS/ncu_$kernel.txt" 2>&1
    grep -E "Throughput|Duration|Achieved Occupancy|Registers Per|Warp Cycles Per Issued|Stall" \
      "$LOGS/ncu_$kernel.txt" | head -20
  done
fi

step "summary"
grep -E "^(ours|sdpa)" "$LOGS/bench_attention.txt" | awk '
  { key = $2 " " $3 " " $4 " " $5; split($6, f, "="); split($8, a, "=")
    if ($1 == "ours") { of[key] = f[2]; oa[key] = a[2] } else { sf[key] = f[2]; sa[key] = a[2] } }
  END { for (k in of) if (k in sf)
          printf "%s  fwd %.3f ms vs SDPA %.3f (%.2fx)  fwd+bwd %.3f ms vs SDPA %.3f (%.2fx)\n",
                 k, of[k], sf[k], of[k] / sf[k], oa[k], sa[k], oa[k] / sa[k] }'
grep -E "test cases|assertions" "$LOGS/test_attention.txt"
exit $fail
