// Token + learned position embedding: out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:].
// The backward scatters into wte rows that several tokens may share, so it is split over
// channels, not rows: each chunk owns a slice of C and walks all (b,t) in order.
#include <algorithm>
#include <string>

#include "backend/cpu/ops.hpp"
#include "backend/cpu/parallel.hpp"
#include "core/error.hpp"

namespace pg::cpu {

template <typename T>
void embedding_fwd(T* out, const int32_t* tokens, const T* wte, Nullable<const T> wpe, int B,
                   int Tn, int C) {
  const int64_t rows = int64_t(B) * Tn;
  parallel_for(
      rows,
      [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const int32_t tok = tokens[r];
          PG_CHECK(tok >= 0, "embedding_fwd: negative token id " + std::to_string(tok));
          const T* e = wte + int64_t(tok) * C;
          T* o = out + r * C;
          if (wpe) {
            const T* p = wpe + (r % Tn) * C;
            for (int c = 0; c < C; ++c) o[c] = e[c] + p[c];
          } else {
            std::copy(e, e + C, o);
          }
        }
      },
      rows_per_chunk(C));
}

template <typename T>
void embedding_bwd(Nullable<T> dwte, Nullable<T> dwpe, const T* dout, const int32_t* tokens, int B,
                   int Tn, int C) {
  const int64_t rows = int64_t(B) * Tn;
  parallel_for(
      C,
      [&](int64_t c0, int64_t c1) {
        for (int64_t r = 0; r < rows; ++r) {
          const T* d = dout + r * C;
          if (dwte) {
            T* g = dwte + int64_t(tokens[r]) * C;
            for (int64_t c = c0; c < c1; ++c) g[c] += d[c];
          }
          if (dwpe) {
            T* g = dwpe + (r % Tn) * C;
            for (int64_t c = c0; c < c1; ++c) g[c] += d[c];
          }
        }
      },
      rows_per_chunk(rows));
}

template void embedding_fwd<float>(float*, const int32_t*, const float*, const float*, int, int,
                                   int);
template void embedding_fwd<double>(double*, const int32_t*, const double*, const double*, int, int,
                                    int);
template void embedding_bwd<float>(float*, float*, const float*, const int32_t*, int, int, int);
template void embedding_bwd<double>(double*, double*, const double*, const int32_t*, int, int, int);

}  // namespace pg::cpu
