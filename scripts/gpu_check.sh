#!/usr/bin/env bash
# The GPU check, one command on a GPU machine with no network: configures a separate build
# directory with the CUDA backend and the dependencies of .deps/ (scripts/vendor_deps.sh, run
# beforehand on a machine that has them), builds, runs the GPU tests (tests/gpu, tag [gpu]) and
# the benchmark programs (bench/*_bench.*), and writes one log per step to $OUT when it is set
# (else to $BUILD_DIR/logs). Exits non-zero when any step fails.
#
#   scripts/gpu_check.sh                    everything
#   scripts/gpu_check.sh "[gemm]"           only the GPU tests matching a Catch2 filter
#   GPU_CHECK_BENCH=none|programs|all       benchmarks: none, the bench programs (default), or
#                                           also scripts/bench_*.sh (with BUILD_DIR exported)
#   BUILD_DIR=build-gpu, CUDA_ARCH=90a      the build directory, CMAKE_CUDA_ARCHITECTURES
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build-gpu}
CUDA_ARCH=${CUDA_ARCH:-90a}
GPU_CHECK_BENCH=${GPU_CHECK_BENCH:-programs}
TEST_FILTER=${1:-[gpu]}
LOG_DIR=${OUT:-$ROOT/$BUILD_DIR/logs}
mkdir -p "$LOG_DIR"
# The GPU machine keeps CMake and ninja in PyTorch's virtualenv.
export PATH="/opt/torch/.venv/bin:/usr/local/cuda/bin:$PATH"
# The vendored OpenBLAS and its runtime libraries, for the linker (-rpath-link) and at run time.
[[ -d .deps/lib ]] && export LD_LIBRARY_PATH="$ROOT/.deps/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export BUILD_DIR

failed=()
# step NAME CMD...: runs CMD with its output in $LOG_DIR/NAME.log and on the console.
step() {
  local name=$1
  shift
  echo "==== $name: $*"
  local t0=$SECONDS
  "$@" 2>&1 | tee "$LOG_DIR/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "==== $name: rc=$rc in $((SECONDS - t0)) s"
  ((rc == 0)) || failed+=("$name(rc=$rc)")
  return "$rc"
}

environment() {
  date -u
  nvidia-smi || true
  nvcc --version | tail -n 2
  cmake --version | head -n 1
  echo "ninja $(ninja --version)"
  gcc --version | head -n 1
  echo "nproc $(nproc)"
  ls .deps/include .deps/lib 2>&1
}
step environment environment

if [[ ! -f .deps/include/catch2/catch.hpp ]]; then
  echo "gpu_check: .deps/include/catch2/catch.hpp missing: run scripts/vendor_deps.sh first" >&2
  exit 1
fi

step configure cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPOLARGPT_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" || exit 1
step build ninja -C "$BUILD_DIR" gpu_check_targets || exit 1
step gpu_tests "$BUILD_DIR/polargpt_gpu_tests" "$TEST_FILTER" --durations yes

if [[ $GPU_CHECK_BENCH != none ]]; then
  benches() {
    local rc=0
    for b in "$BUILD_DIR"/*_bench; do
      [[ -x $b ]] || continue
      echo "---- $b"
      "$b" || rc=1
    done
    if [[ $GPU_CHECK_BENCH == all ]]; then
      for s in scripts/bench_*.sh; do
        [[ -f $s ]] || continue
        echo "---- $s"
        bash "$s" || rc=1
      done
    fi
    return $rc
  }
  step bench benches
fi

if ((${#failed[@]})); then
  echo "gpu_check: FAILED: ${failed[*]} (logs in $LOG_DIR)"
  exit 1
fi
echo "gpu_check: all steps passed (logs in $LOG_DIR)"
