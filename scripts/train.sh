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
# Haswell kernels; its Skylake-X kernels are ~1.45-1.6x faster there on the LM head's GEMMs
# (bench/RESULTS.md). Training takes them on any AVX-512 CPU, also where the environment names
# another kernel set (one may pin Haswell so that the tests' in-process and subprocess results
# agree); POLARGPT_TRAIN_CORETYPE=NAME picks a kernel set for this script instead.
if [[ -n "${POLARGPT_TRAIN_CORETYPE:-}" ]]; then
  export OPENBLAS_CORETYPE=$POLARGPT_TRAIN_CORETYPE
elif grep -q avx512f /proc/cpuinfo 2>/dev/null; then
  export OPENBLAS_CORETYPE=SKYLAKEX
fi
exec build/polargpt train --config configs/tiny.json --device "$device" "$@"
