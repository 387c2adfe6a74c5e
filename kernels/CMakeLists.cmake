# The CUDA backend, included by the top-level CMakeLists.txt when nvcc is found.
#
#   polargpt_cuda       static library: kernels/*.cu (our kernels, one file per op family) and
#                       src/backend/cuda/*.cpp|*.cu, src/**/cuda_*.cpp|*.cu (RAII handles, the
#                       cuBLASLt GEMM layer, the CUDA model). Linked into polargpt_lib, so every
#                       program and test gets it, and POLARGPT_WITH_CUDA is defined for all of them.
#   polargpt_gpu_tests  Catch2 v2 tests of tests/gpu/*.cpp|*.cu (tag [gpu]) against the CPU
#                       reference; ctest entry "gpu", reported as skipped where no GPU is present.
#
# Built for CMAKE_CUDA_ARCHITECTURES (90a = sm_90 with its arch-specific instructions, wgmma among
# them: the H100/H200, unless set otherwise).
find_package(CUDAToolkit REQUIRED)
# C++20 in .cu files too. CMake before 3.28 does not know that nvcc 12+ takes -std=c++20: tell it.
if(NOT DEFINED CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  list(APPEND CMAKE_CUDA_COMPILE_FEATURES cuda_std_20)
endif()
set(CMAKE_CUDA_STANDARD 20)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
set(CMAKE_CUDA_FLAGS_RELEASE "-O3")

file(GLOB POLARGPT_CUDA_SOURCES CONFIGURE_DEPENDS
  ${CMAKE_SOURCE_DIR}/kernels/*.cu
  ${CMAKE_SOURCE_DIR}/src/backend/cuda/*.cpp
  ${CMAKE_SOURCE_DIR}/src/backend/cuda/*.cu)
file(GLOB_RECURSE POLARGPT_CUDA_MODEL_SOURCES CONFIGURE_DEPENDS
  ${CMAKE_SOURCE_DIR}/src/cuda_*.cpp ${CMAKE_SOURCE_DIR}/src/cuda_*.cu)
list(APPEND POLARGPT_CUDA_SOURCES ${POLARGPT_CUDA_MODEL_SOURCES})

add_library(polargpt_cuda STATIC ${POLARGPT_CUDA_SOURCES})
target_include_directories(polargpt_cuda PUBLIC ${CMAKE_SOURCE_DIR}/src ${CMAKE_SOURCE_DIR})
target_compile_definitions(polargpt_cuda PUBLIC POLARGPT_WITH_CUDA)
# --expt-relaxed-constexpr: std::numeric_limits and friends in device code.
target_compile_options(polargpt_cuda PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -lineinfo -Xcompiler=-Wall>
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>)
target_link_libraries(polargpt_cuda PUBLIC CUDA::cudart CUDA::cublasLt spdlog::spdlog)
# The CUDA model uses the plan (model/, config/) of polargpt_lib, which in turn carries the CUDA
# library to every program: a cycle of static libraries, which CMake repeats on the link line.
target_link_libraries(polargpt_cuda PUBLIC polargpt_lib)
target_link_libraries(polargpt_lib PUBLIC polargpt_cuda)

# ---- GPU tests ---------------------------------------------------------------------------------
file(GLOB POLARGPT_GPU_TESTS CONFIGURE_DEPENDS
  ${CMAKE_SOURCE_DIR}/tests/gpu/*.cpp ${CMAKE_SOURCE_DIR}/tests/gpu/*.cu)
add_executable(polargpt_gpu_tests ${POLARGPT_GPU_TESTS})
target_include_directories(polargpt_gpu_tests PRIVATE ${CMAKE_SOURCE_DIR}/tests)
target_link_libraries(polargpt_gpu_tests PRIVATE polargpt_lib)
target_compile_options(polargpt_gpu_tests PRIVATE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>
  $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr>)
target_precompile_headers(polargpt_gpu_tests PRIVATE $<$<COMPILE_LANGUAGE:CXX>:<catch2/catch.hpp$<ANGLE-R>>)
set_source_files_properties(${CMAKE_SOURCE_DIR}/tests/gpu/main.cpp PROPERTIES SKIP_PRECOMPILE_HEADERS ON)
# tests/gpu/main.cpp exits with 77 when no CUDA device is present: ctest reports "Skipped".
set(POLARGPT_GPU_SKIP_CODE 77)
target_compile_definitions(polargpt_gpu_tests PRIVATE
  POLARGPT_SOURCE_DIR="${CMAKE_SOURCE_DIR}" POLARGPT_GPU_SKIP_CODE=${POLARGPT_GPU_SKIP_CODE}
  POLARGPT_BINARY="$<TARGET_FILE:polargpt>")
# Some GPU tests run the CLI (launch.sh, train --device cuda): building the tests builds it too.
add_dependencies(polargpt_gpu_tests polargpt)
add_test(NAME gpu COMMAND polargpt_gpu_tests "[gpu]" WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(gpu PROPERTIES SKIP_RETURN_CODE ${POLARGPT_GPU_SKIP_CODE})

# Benchmarks: one program per bench/*_bench.cu|*_bench.cpp (not part of ctest).
file(GLOB POLARGPT_GPU_BENCHES CONFIGURE_DEPENDS
  ${CMAKE_SOURCE_DIR}/bench/*_bench.cu ${CMAKE_SOURCE_DIR}/bench/*_bench.cpp)
foreach(src ${POLARGPT_GPU_BENCHES})
  get_filename_component(name ${src} NAME_WE)
  add_executable(${name} ${src})
  target_link_libraries(${name} PRIVATE polargpt_lib)
endforeach()

# What scripts/gpu_check.sh builds on the GPU machine: the CLI, the GPU tests, the benchmarks.
add_custom_target(gpu_check_targets)
add_dependencies(gpu_check_targets polargpt polargpt_gpu_tests)
foreach(src ${POLARGPT_GPU_BENCHES})
  get_filename_component(name ${src} NAME_WE)
  add_dependencies(gpu_check_targets ${name})
endforeach()
