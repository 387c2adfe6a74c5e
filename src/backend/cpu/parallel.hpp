// Deterministic row parallelism for the CPU backend.
//
// parallel_for(n, f) cuts [0, n) into k contiguous chunks, chunk c = [n*c/k, n*(c+1)/k), and
// calls f(begin, end) once per chunk on a small persistent pool of threads (the calling thread
// runs chunks too). The ops only hand it loops whose iterations write disjoint outputs and
// compute each output in a fixed order, so their results are bit-identical for any thread count.
// Reductions across chunks are never done in floating point here; where an op needs one, it
// splits the other dimension instead (e.g. parameter gradients are split by column, each column
// summed over all rows in row order).
//
// Nested calls (f itself calling parallel_for), and calls made while another thread is using the
// pool (ranks as threads in one process), run serially on the calling thread.
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace pg::cpu {

// Number of threads parallel_for uses: PG_NUM_THREADS when set, else the hardware concurrency.
int num_threads();
// Sets the number of threads (>= 1; 1 runs everything on the caller). Not to be called from
// inside a parallel_for body.
void set_num_threads(int n);

// The type-erased body of a parallel_for: fn(ctx, begin, end). (A function pointer and a context
// rather than std::function, so a call allocates nothing.)
using RangeFn = void (*)(void* ctx, int64_t begin, int64_t end);
void parallel_for_range(int64_t n, int64_t min_chunk, RangeFn fn, void* ctx);

// Runs f(begin, end) over k = min(num_threads(), n / min_chunk) contiguous chunks covering [0, n)
// (at least one), so no chunk is shorter than min_chunk unless n is: cheap loops stay on one
// thread. Blocks until all chunks are done; an exception thrown by f is rethrown on the caller
// (after the other chunks finish).
template <typename F>
void parallel_for(int64_t n, F&& f, int64_t min_chunk = 1) {
  if (n <= 0) return;
  if (n < 2 * min_chunk || num_threads() == 1) {
    f(int64_t(0), n);
    return;
  }
  using Body = std::remove_reference_t<F>;
  parallel_for_range(
      n, min_chunk, [](void* ctx, int64_t b, int64_t e) { (*static_cast<Body*>(ctx))(b, e); },
      const_cast<void*>(static_cast<const void*>(&f)));
}

// A chunk length that gives each thread at least ~32k units of work (about 10 µs), for rows that
// cost `work_per_row` units each.
inline int64_t rows_per_chunk(int64_t work_per_row) {
  constexpr int64_t kMinWork = int64_t(1) << 15;
  return std::max<int64_t>(1, kMinWork / std::max<int64_t>(1, work_per_row));
}

}  // namespace pg::cpu
