#!/usr/bin/env bash
# Set-up if needed, then the whole CPU test suite through ctest. GPU tests live in tests/gpu and
# run through scripts/gpu_check.sh on a GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure -j "$(nproc)" "$@"
