#!/usr/bin/env bash
# Set-up if needed, then trains configs/tiny.json on the bundled corpus: on the GPU when there is
# one and this build has the CUDA backend, else on the CPU. Extra flags go to `polargpt train`
# (e.g. --set train.max_steps=100 --out runs/mine).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
device=cpu
if build/polargpt --version | grep -q "cuda" && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  device=cuda
fi
exec build/polargpt train --config configs/tiny.json --device "$device" "$@"
