#!/usr/bin/env bash
# Copies the build dependencies that the GPU machine's image lacks into .deps/ (git-ignored),
# which travels with the tree and which CMake searches (include/ first on the include path):
#   .deps/include/catch2/catch.hpp   Catch2 v2's single header (the image has only Catch2 v3)
#   .deps/include/pcre2.h, .deps/lib/libpcre2-8.a          PCRE2 (the tokenizer's regex)
#   .deps/include/openblas/*.h, .deps/lib/libopenblas.so*  OpenBLAS (the CPU reference's GEMMs),
#   .deps/lib/libgfortran.so.5, libquadmath.so.0           and the runtime libraries it needs
# Run it here (Debian 12 with catch2, libpcre2-dev, libopenblas-dev installed by scripts/setup.sh);
# scripts/gpu_check.sh then builds with .deps on the GPU machine. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
DEPS=.deps
MULTIARCH=/usr/lib/x86_64-linux-gnu

need() { [[ -e "$1" ]] || { echo "vendor_deps: $1 not found (run scripts/setup.sh first)" >&2; exit 1; }; }

need /usr/include/catch2/catch.hpp
grep -q "Catch v2\." /usr/include/catch2/catch.hpp ||
  { echo "vendor_deps: /usr/include/catch2/catch.hpp is not Catch2 v2" >&2; exit 1; }
mkdir -p "$DEPS/include/catch2" "$DEPS/include/openblas" "$DEPS/lib"
cp -u /usr/include/catch2/catch.hpp "$DEPS/include/catch2/"

need /usr/include/pcre2.h
need "$MULTIARCH/libpcre2-8.a"
cp -u /usr/include/pcre2.h "$DEPS/include/"
cp -u "$MULTIARCH/libpcre2-8.a" "$DEPS/lib/"

OPENBLAS_INC=/usr/include/x86_64-linux-gnu/openblas-pthread
need "$OPENBLAS_INC/cblas.h"
cp -u "$OPENBLAS_INC"/{cblas.h,openblas_config.h} "$DEPS/include/openblas/"
OPENBLAS_SO=$(readlink -f "$MULTIARCH/libopenblas.so.0")
need "$OPENBLAS_SO"
cp -u "$OPENBLAS_SO" "$DEPS/lib/libopenblas.so.0"
ln -sf libopenblas.so.0 "$DEPS/lib/libopenblas.so"
for lib in libgfortran.so.5 libquadmath.so.0; do
  need "$MULTIARCH/$lib"
  cp -uL "$MULTIARCH/$lib" "$DEPS/lib/$lib"
done
echo "vendor_deps: $(du -sh "$DEPS" | cut -f1) in $DEPS"
