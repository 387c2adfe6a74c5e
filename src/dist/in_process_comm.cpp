#include "dist/in_process_comm.hpp"

#include <chrono>
#include <cstring>
#include <exception>
#include <thread>

#include "core/error.hpp"

namespace pg::dist {

namespace {

// out[i] = op over ranks s = 0..W-1, in order, of in[s][first + i], for i < n; the sum kept in
// Acc, load/store converting between the buffer's Elem and Acc.
template <typename Elem, typename Acc, typename Load, typename Store>
void reduce_typed(const std::vector<const void*>& in, int64_t first, int64_t n, void* out, ReduceOp op, Load load,
                  Store store) {
  const int W = int(in.size());
  auto* o = static_cast<Elem*>(out);
  for (int64_t i = 0; i < n; ++i) {
    Acc s = load(static_cast<const Elem*>(in[0])[first + i]);
    for (int r = 1; r < W; ++r) s += load(static_cast<const Elem*>(in[size_t(r)])[first + i]);
    o[i] = store(op == ReduceOp::avg ? s / Acc(W) : s);
  }
}

void reduce_into(const std::vector<const void*>& in, int64_t first, int64_t n, void* out, DType dtype, ReduceOp op) {
  auto same = [](auto x) { return x; };
  switch (dtype) {
    case DType::f32: reduce_typed<float, float>(in, first, n, out, op, same, same); break;
    case DType::f64: reduce_typed<double, double>(in, first, n, out, op, same, same); break;
    case DType::bf16: reduce_typed<uint16_t, float>(in, first, n, out, op, bf16_value, bf16_bits); break;
  }
}

}  // namespace

InProcessGroup::InProcessGroup(int world_size, double timeout_s)
    : world_size_(world_size), timeout_s_(timeout_s), slots_(size_t(world_size)) {
  PG_CHECK(world_size >= 1, "InProcessGroup: world_size must be >= 1");
}

void InProcessGroup::abort(int rank, const std::string& what) {
  {
    std::lock_guard lk(m_);
    if (!failed_) {
      failed_ = true;
      failure_ = "rank " + std::to_string(rank) + " failed: " + what;
    }
  }
  cv_.notify_all();
}

std::string InProcessGroup::failure() {
  std::lock_guard lk(m_);
  return failed_ ? failure_ : std::string();
}

void InProcessGroup::arrive_and_wait(int rank) {
  std::unique_lock lk(m_);
  if (failed_) throw PeerFailure(failure_);
  const uint64_t gen = generation_;
  if (++arrived_ == world_size_) {
    arrived_ = 0;
    ++generation_;
    lk.unlock();
    cv_.notify_all();
    return;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s_);
  const bool done = cv_.wait_until(lk, deadline, [&] { return generation_ != gen || failed_; });
  if (generation_ != gen) return;
  if (!done && !failed_) {
    failed_ = true;
    failure_ = "rank " + std::to_string(rank) + " waited more than " + std::to_string(timeout_s_) +
               " s for the other ranks at a collective";
    cv_.notify_all();
  }
  throw PeerFailure(failure_);
}

void InProcessComm::post(const void* send, void* recv) {
  group_->slots_[size_t(rank_)] = {send, recv};  // each rank writes only its own slot
  group_->arrive_and_wait(rank_);
}

void InProcessComm::all_reduce(void* buf, int64_t count, DType dtype, ReduceOp op) {
  const int W = world_size();
  if (W == 1) return;  // sum or avg over one rank is the identity
  const size_t es = dtype_size(dtype);
  if (rank_ == 0) group_->scratch_.resize(size_t(count) * es);  // nobody touches it before the barrier
  post(buf, buf);
  std::vector<const void*> in(static_cast<size_t>(W));
  for (int r = 0; r < W; ++r) in[size_t(r)] = group_->slots_[size_t(r)].send;
  const int64_t lo = count * rank_ / W, hi = count * (rank_ + 1) / W;
  reduce_into(in, lo, hi - lo, group_->scratch_.data() + size_t(lo) * es, dtype, op);
  group_->arrive_and_wait(rank_);  // scratch complete; no rank reads the inputs any more
  std::memcpy(buf, group_->scratch_.data(), size_t(count) * es);
  group_->arrive_and_wait(rank_);  // every rank has copied the scratch out
}

void InProcessComm::reduce_scatter(const void* send, void* recv, int64_t recv_count, DType dtype, ReduceOp op) {
  const int W = world_size();
  post(send, recv);
  std::vector<const void*> in(static_cast<size_t>(W));
  for (int r = 0; r < W; ++r) in[size_t(r)] = group_->slots_[size_t(r)].send;
  // Rank r writes only recv_r; in place that is its own chunk r, which only rank r reads.
  reduce_into(in, recv_count * rank_, recv_count, recv, dtype, op);
  group_->arrive_and_wait(rank_);
}

void InProcessComm::all_gather(const void* send, void* recv, int64_t send_count, DType dtype) {
  const int W = world_size();
  const size_t bytes = size_t(send_count) * dtype_size(dtype);
  post(send, recv);
  for (int r = 0; r < W; ++r) {
    auto* dst = static_cast<unsigned char*>(recv) + size_t(r) * bytes;
    const void* src = group_->slots_[size_t(r)].send;
    if (dst != src) std::memcpy(dst, src, bytes);
  }
  group_->arrive_and_wait(rank_);
}

void InProcessComm::broadcast(void* buf, int64_t count, DType dtype, int root) {
  PG_CHECK(root >= 0 && root < world_size(), "broadcast: root out of range");
  post(buf, buf);
  if (rank_ != root) std::memcpy(buf, group_->slots_[size_t(root)].send, size_t(count) * dtype_size(dtype));
  group_->arrive_and_wait(rank_);
}

void InProcessComm::barrier() { group_->arrive_and_wait(rank_); }

void run_ranks(int world_size, double timeout_s, const std::function<void(Comm&)>& body) {
  InProcessGroup group(world_size, timeout_s);
  std::mutex m;
  std::exception_ptr first;  // the first exception that is not a consequence of another rank's
  auto run = [&](int rank) {
    try {
      InProcessComm comm(group, rank);
      body(comm);
    } catch (const PeerFailure&) {
      // Another rank failed first; its exception is the one to report.
    } catch (const std::exception& e) {
      {
        std::lock_guard lk(m);
        if (!first) first = std::current_exception();
      }
      group.abort(rank, e.what());
    } catch (...) {
      {
        std::lock_guard lk(m);
        if (!first) first = std::current_exception();
      }
      group.abort(rank, "unknown exception");
    }
  };
  std::vector<std::thread> threads;
  for (int r = 1; r < world_size; ++r) threads.emplace_back(run, r);
  run(0);
  for (auto& t : threads) t.join();
  if (first) std::rethrow_exception(first);
  if (const std::string f = group.failure(); !f.empty()) throw std::runtime_error("dist: " + f);
}

}  // namespace pg::dist
