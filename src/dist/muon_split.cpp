#include "dist/muon_split.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <utility>

#include "core/error.hpp"

namespace pg::dist {

namespace {

// Matrix indices grouped by oriented shape: groups in order of first appearance, members in
// index order (NsGroups' batching order).
std::vector<int> group_order(std::span<const NsMatrix> shapes) {
  std::vector<std::pair<int, int>> keys;  // oriented (m, n) of each group, in first-seen order
  std::vector<std::vector<int>> members;
  for (int i = 0; i < int(shapes.size()); ++i) {
    const std::pair<int, int> k = {std::min(shapes[size_t(i)].rows, shapes[size_t(i)].cols),
                                   std::max(shapes[size_t(i)].rows, shapes[size_t(i)].cols)};
    const auto it = std::find(keys.begin(), keys.end(), k);
    if (it == keys.end()) {
      keys.push_back(k);
      members.push_back({i});
    } else {
      members[size_t(it - keys.begin())].push_back(i);
    }
  }
  std::vector<int> order;
  for (const auto& g : members) order.insert(order.end(), g.begin(), g.end());
  return order;
}

}  // namespace

double ns_flops_per_iteration(NsMatrix s) {
  const double m = std::min(s.rows, s.cols), n = std::max(s.rows, s.cols);
  return 4.0 * m * m * n + 2.0 * m * m * m;
}

std::vector<int> assign_ns_work(std::span<const NsMatrix> shapes, int world_size) {
  PG_CHECK(world_size >= 1, "assign_ns_work: world_size must be >= 1");
  const std::vector<int> order = group_order(shapes);
  double total = 0;
  for (const NsMatrix& s : shapes) total += ns_flops_per_iteration(s);
  // Matrix k of the list goes to the rank whose share [r, r+1) * total / W holds the midpoint
  // of its cost interval: the cut between ranks falls at the prefix sum closest to r * total / W.
  std::vector<int> owner(shapes.size(), 0);
  double before = 0;
  for (int i : order) {
    const double c = ns_flops_per_iteration(shapes[size_t(i)]);
    const double mid = before + 0.5 * c;
    owner[size_t(i)] = total > 0 ? std::min(world_size - 1, int(mid / total * world_size)) : 0;
    before += c;
  }
  return owner;
}

void orthogonalize_distributed(Comm& comm, std::span<float* const> mats, std::span<const NsMatrix> shapes,
                               const OrthogonalizeFn& orthogonalize) {
  PG_CHECK(mats.size() == shapes.size(), "orthogonalize_distributed: one shape per matrix");
  const int W = comm.world_size(), me = comm.rank();
  if (W == 1) {
    orthogonalize(mats, shapes);
    return;
  }
  const std::vector<int> owner = assign_ns_work(shapes, W);
  const std::vector<int> order = group_order(shapes);
  std::vector<int64_t> owned_elems(size_t(W), 0);
  std::vector<float*> mine;
  std::vector<NsMatrix> mine_shapes;
  for (int i : order) {
    const NsMatrix s = shapes[size_t(i)];
    owned_elems[size_t(owner[size_t(i)])] += int64_t(s.rows) * s.cols;
    if (owner[size_t(i)] == me) {
      mine.push_back(mats[size_t(i)]);
      mine_shapes.push_back(s);
    }
  }
  if (!mine.empty()) orthogonalize(mine, mine_shapes);

  // Pack, all-gather, unpack (rank by rank, each rank's matrices in list order).
  const int64_t L = std::max<int64_t>(1, *std::max_element(owned_elems.begin(), owned_elems.end()));
  std::vector<float> all(size_t(L) * size_t(W), 0.0f);
  float* pack = all.data() + size_t(me) * size_t(L);
  for (size_t k = 0; k < mine.size(); ++k) {
    const size_t n = size_t(mine_shapes[k].rows) * size_t(mine_shapes[k].cols);
    std::memcpy(pack, mine[k], n * sizeof(float));
    pack += n;
  }
  comm.all_gather(all.data() + size_t(me) * size_t(L), all.data(), L, DType::f32);
  std::vector<int64_t> at(static_cast<size_t>(W));
  for (int r = 0; r < W; ++r) at[size_t(r)] = int64_t(r) * L;
  for (int i : order) {
    const int r = owner[size_t(i)];
    const size_t n = size_t(shapes[size_t(i)].rows) * size_t(shapes[size_t(i)].cols);
    if (r != me) std::memcpy(mats[size_t(i)], all.data() + at[size_t(r)], n * sizeof(float));
    at[size_t(r)] += int64_t(n);
  }
}

}  // namespace pg::dist
