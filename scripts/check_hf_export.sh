#!/usr/bin/env bash
# End-to-end check of the model interchange against the real transformers library, in one
# command, on a machine whose Python has torch + transformers (the GPU machine: no network needed):
#   1. trains a small gpt2-architecture model on the bundled corpus (CPU, ~40 steps),
#   2. exports it with `polargpt export --format hf` and checks that transformers' GPT2LMHeadModel
#      gives the same loss and accuracy as `polargpt eval` on the same val tokens,
#   3. exports it to an llm.c file (bf16, version 5), imports that file back, exports the import
#      to hf and checks it again, and checks every tensor against the llm.c file read by
#      llm.c's layout in numpy (scripts/check_hf_export.py --llmc).
#
#   scripts/check_hf_export.sh [POLARGPT_BINARY]    (default build/polargpt)
#   PYTHON=/opt/torch/.venv/bin/python              the Python with torch + transformers
#   WORK=/tmp/polargpt-hf-check                     scratch directory (recreated)
set -euo pipefail
cd "$(dirname "$0")/.."
PG=$(realpath "${1:-build/polargpt}")
PYTHON=${PYTHON:-python3}
WORK=${WORK:-/tmp/polargpt-hf-check}
rm -rf "$WORK"
mkdir -p "$WORK"

"$PYTHON" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
"$PG" train --config configs/tiny.json --set model.n_layer=2 --set model.d_model=64 --set model.n_head=2 --set model.pos=learned \
  --set model.seq_len=64 --set train.batch_size=8 --set train.max_steps=40 --set train.eval_every=0 \
  --set train.eval_batches=2 --set train.log_every=20 --out "$WORK/run"
"$PG" export --ckpt "$WORK/run" --format hf --out "$WORK/hf"
"$PYTHON" scripts/check_hf_export.py "$WORK/hf" --polargpt "$PG" --batches 8

"$PG" export --ckpt "$WORK/run" --format llmc --dtype bf16 --out "$WORK/model_bf16.bin"
"$PG" import --llmc "$WORK/model_bf16.bin" --out "$WORK/imported" --set train.batch_size=8
"$PG" export --ckpt "$WORK/imported" --format hf --out "$WORK/hf_imported"
"$PYTHON" scripts/check_hf_export.py "$WORK/hf_imported" --polargpt "$PG" --batches 8 --llmc "$WORK/model_bf16.bin"
echo "check_hf_export.sh: all checks passed"
