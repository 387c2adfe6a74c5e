#include "optim/ns_groups.hpp"

#include <algorithm>

#include "backend/cpu/parallel.hpp"
#include "core/error.hpp"
#include "optim/dense.hpp"

namespace pg {

NsGroups::NsGroups(std::span<const MatrixShape> shapes) : shapes_(shapes.begin(), shapes.end()) {
  for (int i = 0; i < int(shapes_.size()); ++i) {
    const auto [rows, cols] = shapes_[size_t(i)];
    PG_CHECK(rows > 0 && cols > 0, "NsGroups: empty matrix");
    const int m = std::min(rows, cols), n = std::max(rows, cols);
    auto g = std::find_if(groups_.begin(), groups_.end(), [&](const Group& x) { return x.m == m && x.n == n; });
    if (g == groups_.end()) g = groups_.insert(groups_.end(), Group{m, n, {}, {}, {}});
    g->members.push_back(i);
    g->tall.push_back(rows > cols);
  }
  for (auto& g : groups_) g.buffer.assign(g.members.size() * size_t(g.m) * size_t(g.n), 0.0f);
}

void NsGroups::run(std::span<float* const> mats, std::span<const NsCoeffs> schedule, NsPrecision prec,
                   double safety) {
  PG_CHECK(mats.size() == shapes_.size(), "NsGroups::run: one pointer per matrix expected");
  for (auto& g : groups_) {
    const size_t mn = size_t(g.m) * size_t(g.n);
    const int count = int(g.members.size());
    // Pack: the wide orientation of every member, back to back.
    for (int k = 0; k < count; ++k) {
      const float* src = mats[size_t(g.members[size_t(k)])];
      float* dst = g.buffer.data() + size_t(k) * mn;
      if (g.tall[size_t(k)]) dense::transpose(src, g.n, g.m, dst);
      else std::copy(src, src + mn, dst);
    }
    // One batched call per group; the pool splits it by matrices (each is independent, so the
    // split does not change a bit). Per matrix ~ steps * (4 m^2 n + m^3) FLOPs: worth a thread.
    float* buf = g.buffer.data();
    cpu::parallel_for(count, [&](int64_t b, int64_t e) {
      newton_schulz_cpu(buf + size_t(b) * mn, int(e - b), g.m, g.n, schedule, prec, safety);
    });
    for (int k = 0; k < count; ++k) {
      const float* src = g.buffer.data() + size_t(k) * mn;
      float* dst = mats[size_t(g.members[size_t(k)])];
      if (g.tall[size_t(k)]) dense::transpose(src, g.m, g.n, dst);
      else std::copy(src, src + mn, dst);
    }
  }
}

}  // namespace pg
