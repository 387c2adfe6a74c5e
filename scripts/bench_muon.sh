#!/usr/bin/env bash
# One Muon optimizer step, ours against PyTorch, on a GPU machine in one go: builds (CMake, in
# $BUILD_DIR, default build-gpu, with .deps from scripts/vendor_deps.sh) the GPU tests and
# muon_bench, runs the GPU tests (GPU_TESTS, default "[muon],[gemm]"; none skips them), then
# build-gpu/muon_bench and bench/torch_muon.py on the same parameter sets (the shapes muon_bench
# prints), and a table of ms per step and ratios. Logs go to $OUT when set (else $BUILD_DIR/logs).
#   usage: scripts/bench_muon.sh [config=configs/moe-gpt2.json]
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_build.sh
GPU_TESTS=${GPU_TESTS:-[muon],[gemm]}
fail=0
step() { echo "== $* ($(date -u +%H:%M:%S))"; }

step "build ($BUILD_DIR)"
gpu_build muon polargpt_gpu_tests muon_bench

if [[ $GPU_TESTS != none ]]; then
  step "GPU tests $GPU_TESTS"
  "$BUILD_DIR/polargpt_gpu_tests" "$GPU_TESTS" > "$LOGS/muon_tests.txt" 2>&1 || fail=1
  grep -E "NS gpu vs cpu|FAILED|failed|with expansion|test cases|assertions" "$LOGS/muon_tests.txt" | head -n 80
fi

GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
step "ours: muon_bench on $GPU"
"$BUILD_DIR/muon_bench" "$@" 2>&1 | tee "$LOGS/muon_ours.txt" || fail=1
mapfile -t sets < <(awk '/^shapes /{ print $2 "=" $3 }' "$LOGS/muon_ours.txt")
step "PyTorch: bench/torch_muon.py ${sets[*]}"
PYTHONUNBUFFERED=1 timeout "${TORCH_TIMEOUT:-300}" python3 bench/torch_muon.py "${sets[@]}" 2>&1 |
  tee "$LOGS/muon_torch.txt" | grep -E "^torch" || fail=1

step "summary (ms; ratio = PyTorch / ours, > 1: ours faster)"
awk '
  function field(line, key,   i, n, kv) { n = split(line, kv, " ")
    for (i = 1; i <= n; i++) if (index(kv[i], key "=") == 1) return substr(kv[i], length(key) + 2)
    return "" }
  /^ours set=/  { s = field($0, "set"); ob[s] = field($0, "ns_batched_ms"); os[s] = field($0, "ns_per_matrix_ms")
                  xb[s] = field($0, "ns_blocks_xxt_ms")
                  ost[s] = field($0, "step_ms"); order[++n] = s }
  /^torch set=/ { s = field($0, "set"); tb[s] = field($0, "ns_batched_ms"); ts[s] = field($0, "ns_per_matrix_ms")
                  tst[s] = field($0, "step_ms") }
  END { for (i = 1; i <= n; i++) { s = order[i]
          printf "%-10s NS batched ours %8.3f torch %8.3f (%.2fx) | NS per-matrix ours %8.3f torch %8s | " \
                 "step ours %8.3f torch %8.3f (%.2fx) | ours batched vs per-matrix %.2fx | " \
                 "X X^T full vs by blocks %.3f / %.3f ms\n",
                 s, ob[s], tb[s], (ob[s] > 0 && tb[s] > 0) ? tb[s] / ob[s] : 0, os[s], ts[s], ost[s], tst[s],
                 (ost[s] > 0 && tst[s] > 0) ? tst[s] / ost[s] : 0, (ob[s] > 0) ? os[s] / ob[s] : 0, ob[s], xb[s] } }
' "$LOGS/muon_ours.txt" "$LOGS/muon_torch.txt" | tee "$LOGS/muon_summary.txt"
exit $fail
