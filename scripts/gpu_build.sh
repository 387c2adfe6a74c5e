# Sourced by the GPU benchmark scripts: the environment of the GPU machine (PyTorch's virtualenv
# holds CMake and ninja; .deps/lib from scripts/vendor_deps.sh at run time) and
#   gpu_build NAME TARGET...   configures $BUILD_DIR once (Release, CUDA on, CUDA_ARCH, default 90a)
#                              and builds the targets, logs in $LOGS/NAME_{configure,build}.txt;
#                              prints the errors and exits on failure.
# Expects to run in the repository root.
export PATH="/opt/torch/.venv/bin:/usr/local/cuda/bin:$PATH"
[[ -d .deps/lib ]] && export LD_LIBRARY_PATH="$PWD/.deps/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
BUILD_DIR=${BUILD_DIR:-build-gpu}
LOGS=${OUT:-$BUILD_DIR/logs}
mkdir -p "$LOGS"

gpu_build() {
  local name=$1
  shift
  if [[ ! -f $BUILD_DIR/build.ninja ]]; then
    cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPOLARGPT_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90a}" > "$LOGS/${name}_configure.txt" 2>&1 ||
      { tail -n 30 "$LOGS/${name}_configure.txt"; exit 1; }
  fi
  ninja -C "$BUILD_DIR" "$@" > "$LOGS/${name}_build.txt" 2>&1 ||
    { grep -E "error|FAILED" "$LOGS/${name}_build.txt" | head -n 30; exit 1; }
}
