// The Catch2 v2 main of the GPU tests (tests/gpu/, tag [gpu]). Where no CUDA device is present
// it prints "skipped: no CUDA device" and exits with POLARGPT_GPU_SKIP_CODE (77), which ctest's
// "gpu" entry maps to Skipped: the tests never pass without having run. Catch2's own exit code
// is the number of failures, so any failure count is mapped to 1 to keep it apart from 77.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>

#include "backend/cuda/device.hpp"

int main(int argc, char* argv[]) {
  const int n_device = pg::cuda::device_count();
  if (n_device == 0) {
    std::printf("skipped: no CUDA device\n");
    return POLARGPT_GPU_SKIP_CODE;
  }
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("GPU tests on %s (sm_%d%d, %d SMs, %.1f GiB)\n", prop.name, prop.major, prop.minor,
              prop.multiProcessorCount, double(prop.totalGlobalMem) / (1 << 30));
  const int failures = Catch::Session().run(argc, argv);
  return failures == 0 ? 0 : 1;
}
