// Bump allocation out of one device arena: every buffer 256-byte aligned. With base == nullptr it
// only counts, so the same code first sizes an arena and then carves it (CudaGpt, CudaMoe).
#pragma once
#include <cstddef>
#include <cstdint>

namespace pg::cuda {

struct ArenaCarver {
  std::byte* base;
  size_t used = 0;
  template <typename T>
  T* take(int64_t n) {
    used = (used + 255) & ~size_t(255);
    T* p = base ? reinterpret_cast<T*>(base + used) : nullptr;
    used += size_t(n) * sizeof(T);
    return p;
  }
};

}  // namespace pg::cuda
