#!/usr/bin/env bash
# Regenerates tests/data/tokenizer_vectors.json with the npm package gpt-3-encoder (MIT), an
# independent GPT-2 encoder, so the C++ tokenizer is checked against ids it did not produce.
# Needs node and npm; installs into .cache/npm (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."

npm install --prefix .cache/npm --no-save --no-audit --no-fund gpt-3-encoder@1.1.4 >/dev/null
node scripts/make_tokenizer_vectors.js .cache/npm/node_modules tests/data/tokenizer_vectors.json
