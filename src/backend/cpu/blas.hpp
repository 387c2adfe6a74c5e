// CBLAS on the CPU backend: the GEMMs are the typed wrappers of optim/dense.hpp, called
// single-threaded from inside parallel_for bodies, each on a block whose shape never depends on
// the thread count, so results do not either.
#pragma once
#include "optim/dense.hpp"

namespace pg::cpu {

// OpenBLAS must not start threads of its own: all parallelism runs on our pool (parallel.hpp).
void ensure_single_threaded_blas();

}  // namespace pg::cpu
