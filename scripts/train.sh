#!/usr/bin/env bash
# Set-up if needed, then trains configs/tiny.json on the bundled corpus: on the GPU when there is
# one and this build's trainer runs on it (`polargpt --version` lists "train: ... cuda"), else on
# the CPU. On the GPU the device is `auto`: the trainer takes the GPU unless the config uses
# something the CUDA trainer lacks (it says which, e.g. optim.kind = muon), and then the CPU.
# Extra flags go to `polargpt train` (e.g. --set train.max_steps=100 --out runs/mine).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
device=cpu
if build/polargpt --version | grep -q "train: .*cuda" && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  device=auto
fi
# Debian's OpenBLAS 0.3.21 does not recognise some newer AVX-512 CPUs and falls back to its
# Haswell kernels; its Skylake-X kernels are ~1.7x faster there (bench/RESULTS.md).
if [[ -z "${OPENBLAS_CORETYPE:-}" ]] && grep -q avx512f /proc/cpuinfo 2>/dev/null; then
  export OPENBLAS_CORETYPE=SKYLAKEX
fi
exec build/polargpt train --config configs/tiny.json --device "$device" "$@"
