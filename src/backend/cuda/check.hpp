// Error checks for the CUDA runtime and cuBLASLt. Every call that returns a status goes through
// one of these; a failure throws std::runtime_error naming the call, the file and the line:
//   CUDA_CHECK(cudaMalloc(&p, n));   ->  "cudaMalloc(&p, n) failed at buffer.cpp:42: out of memory"
// CUDA_CHECK_LAUNCH() after a kernel launch catches launch-configuration errors (not the
// asynchronous faults of the kernel, which surface at the next synchronising call).
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace pg::cuda {

[[noreturn]] inline void throw_cuda_error(const char* call, const char* file, int line,
                                          const std::string& what) {
  throw std::runtime_error(std::string(call) + " failed at " + file + ":" + std::to_string(line) +
                           ": " + what);
}

}  // namespace pg::cuda

#define CUDA_CHECK(call)                                                                    \
  do {                                                                                      \
    const cudaError_t pg_cuda_status_ = (call);                                             \
    if (pg_cuda_status_ != cudaSuccess)                                                     \
      ::pg::cuda::throw_cuda_error(#call, __FILE__, __LINE__,                               \
                                   cudaGetErrorString(pg_cuda_status_));                    \
  } while (0)

#define CUBLAS_CHECK(call)                                                                  \
  do {                                                                                      \
    const cublasStatus_t pg_cublas_status_ = (call);                                        \
    if (pg_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                         \
      ::pg::cuda::throw_cuda_error(#call, __FILE__, __LINE__,                               \
                                   std::string("cuBLAS status ") +                          \
                                       std::to_string(int(pg_cublas_status_)));             \
  } while (0)

#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
