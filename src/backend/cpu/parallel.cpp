// The persistent pool behind parallel_for. One job at a time: the caller posts it (a generation
// number, the body, the range and its chunk count), every worker wakes, takes chunks from a
// shared counter until none are left and checks out; the caller takes chunks too and returns only
// once every worker has checked out, so no worker can still hold a reference to a finished job.
#include "backend/cpu/parallel.hpp"

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/error.hpp"

namespace pg::cpu {
namespace {

thread_local bool t_in_pool = false;  // true on workers, and on a caller while it runs a job

int default_threads() {
  if (const char* s = std::getenv("PG_NUM_THREADS")) {
    const int n = std::atoi(s);
    if (n >= 1) return n;
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : int(hw);
}

// Chunk c of a job covers [n·c/k, n·(c+1)/k).
struct Job {
  RangeFn fn = nullptr;
  void* ctx = nullptr;
  int64_t n = 0;
  int64_t k = 0;
};

class Pool {
 public:
  static Pool& get() {
    static Pool pool;
    return pool;
  }

  int threads() const { return n_threads_.load(std::memory_order_relaxed); }

  void set_threads(int n) {
    PG_CHECK(n >= 1, "set_num_threads: need at least one thread, got " + std::to_string(n));
    PG_CHECK(!t_in_pool, "set_num_threads called from inside parallel_for");
    std::lock_guard busy(busy_);
    stop_workers();
    n_threads_.store(n, std::memory_order_relaxed);
  }

  // Runs job's k chunks. Returns false, having run nothing, when the pool is already in use (by
  // an enclosing job or another thread); the caller then runs serially.
  bool try_run(const Job& job) {
    if (t_in_pool) return false;
    std::unique_lock busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    start_workers();

    {
      std::lock_guard lk(m_);
      job_ = job;
      next_.store(0, std::memory_order_relaxed);
      checked_out_ = 0;
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();

    t_in_pool = true;
    take_chunks(job);
    t_in_pool = false;

    std::exception_ptr err;
    {
      std::unique_lock lk(m_);
      done_.wait(lk, [&] { return checked_out_ == int(workers_.size()); });
      job_ = Job{};
      err = error_;
    }
    if (err) std::rethrow_exception(err);
    return true;
  }

  ~Pool() { stop_workers(); }

 private:
  Pool() : n_threads_(default_threads()) {}

  void take_chunks(const Job& job) {
    for (int64_t c = next_.fetch_add(1); c < job.k; c = next_.fetch_add(1)) {
      try {
        job.fn(job.ctx, job.n * c / job.k, job.n * (c + 1) / job.k);
      } catch (...) {
        std::lock_guard lk(m_);
        if (!error_) error_ = std::current_exception();
      }
    }
  }

  // `seen` is the generation current when the worker was started, so a job posted before the
  // thread first takes the lock is still picked up.
  void worker(uint64_t seen) {
    t_in_pool = true;
    for (;;) {
      Job job;
      {
        std::unique_lock lk(m_);
        wake_.wait(lk, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        job = job_;
      }
      take_chunks(job);
      {
        std::lock_guard lk(m_);
        ++checked_out_;
      }
      done_.notify_one();
    }
  }

  // Called with busy_ held.
  void start_workers() {
    const int want = threads() - 1;
    if (int(workers_.size()) == want) return;
    stop_workers();
    uint64_t gen = 0;
    {
      std::lock_guard lk(m_);
      gen = generation_;
    }
    for (int i = 0; i < want; ++i) workers_.emplace_back([this, gen] { worker(gen); });
  }

  void stop_workers() {
    {
      std::lock_guard lk(m_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
    std::lock_guard lk(m_);
    stop_ = false;
  }

  std::atomic<int> n_threads_;
  std::mutex busy_;  // held by the thread whose job the pool is running
  std::vector<std::thread> workers_;

  std::mutex m_;  // guards everything below
  std::condition_variable wake_, done_;
  uint64_t generation_ = 0;
  Job job_;
  std::atomic<int64_t> next_{0};  // next chunk to take
  int checked_out_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

}  // namespace

int num_threads() { return Pool::get().threads(); }

void set_num_threads(int n) { Pool::get().set_threads(n); }

void parallel_for_range(int64_t n, int64_t min_chunk, RangeFn fn, void* ctx) {
  if (n <= 0) return;
  min_chunk = std::max<int64_t>(1, min_chunk);
  const int64_t k = std::min<int64_t>(num_threads(), n / min_chunk);
  if (k <= 1 || !Pool::get().try_run(Job{fn, ctx, n, k})) fn(ctx, 0, n);
}

}  // namespace pg::cpu
