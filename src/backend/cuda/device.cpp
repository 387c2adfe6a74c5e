// Device discovery for the CUDA backend (see device.hpp).
#include "backend/cuda/device.hpp"

namespace pg::cuda {

int device_count() {
  int n = 0;
  // No driver, no device or a driver older than the runtime all mean: no usable GPU here.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky error so later checks start clean
    return 0;
  }
  return n;
}

int sm_count() {
  int dev = 0, n = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
  return n;
}

}  // namespace pg::cuda
