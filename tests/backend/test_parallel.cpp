// parallel_for: chunking, nesting, exceptions, concurrent callers; and the ops' results being
// bit-identical for any thread count.
#include <atomic>
#include <catch2/catch.hpp>
#include <stdexcept>
#include <thread>

#include "backend/cpu/ops.hpp"
#include "backend/cpu/parallel.hpp"
#include "backend/ops_testing.hpp"

using namespace pg::cpu;
using namespace pg::test;

namespace {

// Sets the thread count for one scope and restores the previous one.
struct ThreadCount {
  int saved;
  explicit ThreadCount(int n) : saved(num_threads()) { set_num_threads(n); }
  ~ThreadCount() { set_num_threads(saved); }
};

}  // namespace

TEST_CASE("parallel_for covers [0, n) once, in contiguous chunks of at least min_chunk", "[ops]") {
  for (const int threads : {1, 2, 3, 8}) {
    ThreadCount tc(threads);
    for (const int64_t n : {int64_t(1), int64_t(5), int64_t(17), int64_t(1000)}) {
      for (const int64_t min_chunk : {int64_t(1), int64_t(4), int64_t(300)}) {
        CAPTURE(threads, n, min_chunk);
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        std::atomic<int> chunks{0}, short_chunks{0};
        parallel_for(
            n,
            [&](int64_t b, int64_t e) {
              chunks++;
              if (e - b < min_chunk) short_chunks++;
              for (int64_t i = b; i < e; ++i) hits[size_t(i)]++;
            },
            min_chunk);
        for (auto& h : hits) REQUIRE(h.load() == 1);
        CHECK(chunks.load() <= threads);
        if (n >= min_chunk) CHECK(short_chunks.load() == 0);
      }
    }
  }
}

TEST_CASE("parallel_for: nested calls run, exceptions reach the caller, concurrent callers",
          "[ops]") {
  ThreadCount tc(3);
  SECTION("nested") {
    std::vector<int> out(64, 0);
    parallel_for(8, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        parallel_for(8, [&](int64_t b2, int64_t e2) {
          for (int64_t j = b2; j < e2; ++j) out[size_t(i * 8 + j)] += int(i * 8 + j);
        });
    });
    for (int i = 0; i < 64; ++i) REQUIRE(out[size_t(i)] == i);
  }
  SECTION("exception") {
    CHECK_THROWS_AS(parallel_for(100,
                                 [](int64_t b, int64_t e) {
                                   if (b <= 50 && 50 < e) throw std::runtime_error("chunk failed");
                                 }),
                    std::runtime_error);
    int64_t total = 0;  // the pool still works afterwards
    std::vector<int64_t> part(100);
    parallel_for(100, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) part[size_t(i)] = i;
    });
    for (auto p : part) total += p;
    CHECK(total == 4950);
  }
  SECTION("concurrent callers") {
    std::vector<std::thread> callers;
    std::atomic<int> wrong{0};
    for (int c = 0; c < 4; ++c)
      callers.emplace_back([&, c] {
        for (int rep = 0; rep < 50; ++rep) {
          std::vector<int> v(1000, 0);
          parallel_for(1000, [&](int64_t b, int64_t e) {
            for (int64_t i = b; i < e; ++i) v[size_t(i)] = int(i) + c;
          });
          for (int i = 0; i < 1000; ++i)
            if (v[size_t(i)] != i + c) wrong++;
        }
      });
    for (auto& t : callers) t.join();
    CHECK(wrong.load() == 0);
  }
}

TEST_CASE("fp32 op results do not depend on the thread count", "[ops]") {
  const uint64_t seed = 31;
  CAPTURE(seed);
  pg::Rng rng(seed);
  // Sizes large enough that every op really splits its work over threads.
  const int N = 96, C = 256, V = 3001, B = 3, Tn = 32, NH = 4, hs = 16;
  const auto fv = [&](int64_t n, double s = 1.0) { return cast<float>(randn(rng, n, s)); };
  const auto x = fv(int64_t(N) * C), g = fv(C), b = fv(C), dout = fv(int64_t(N) * C);
  const auto w = fv(int64_t(V) * C, 0.1), logits = fv(int64_t(N) * V, 3.0),
             dlog = fv(int64_t(N) * V);
  const auto targets = rand_ints(rng, N, V);
  const auto q = fv(int64_t(B) * Tn * NH * hs), k = fv(q.size()), v = fv(q.size());
  const auto tokens = rand_ints(rng, int64_t(B) * Tn, 50);
  // A narrow input of a wide output: the input gradient's shared operand (Vw x Cn > 2^20 elements)
  // caps it at 4 row blocks.
  const int Vw = 70001, Cn = 16;
  const auto wn = fv(int64_t(Vw) * Cn, 0.1), xn = fv(int64_t(N) * Cn), dn = fv(int64_t(N) * Vw);

  using F = std::vector<float>;
  const auto run_all = [&]() {
    std::vector<F> r;
    F losses(N), dl(size_t(N) * V), o(size_t(N) * C), m(N), rs(N), dx(o.size(), 0.f), dg(C, 0.f),
        db(C, 0.f), dwb(size_t(V), 0.f), dw(size_t(V) * C, 0.f), dxm(o.size(), 0.f);
    int64_t correct = 0;
    const double mean =
        cross_entropy_fwd(losses.data(), &correct, logits.data(), targets.data(), N, V);
    cross_entropy_bwd(dl.data(), logits.data(), targets.data(), N, V, 1.0 / N);
    r.push_back(losses);
    r.push_back(F{float(mean), float(correct)});
    r.push_back(dl);
    F lse(N), dll(size_t(N) * V);
    cross_entropy_fwd(losses.data(), nullptr, logits.data(), targets.data(), N, V, lse.data());
    cross_entropy_bwd_lse(dll.data(), logits.data(), lse.data(), targets.data(), N, V, 1.0 / N);
    r.insert(r.end(), {lse, dll});
    layernorm_fwd(o.data(), m.data(), rs.data(), x.data(), g.data(), b.data(), N, C);
    layernorm_bwd(dx.data(), dg.data(), db.data(), dout.data(), x.data(), g.data(), m.data(),
                  rs.data(), N, C);
    r.insert(r.end(), {o, dx, dg, db});
    rmsnorm_fwd(o.data(), rs.data(), x.data(), g.data(), N, C);
    rmsnorm_bwd(dx.data(), dg.data(), dout.data(), x.data(), g.data(), rs.data(), N, C);
    r.insert(r.end(), {o, dx, dg});
    F lo(size_t(N) * V);
    matmul_fwd(lo.data(), x.data(), w.data(), nullptr, N, C, V);
    matmul_bwd(dxm.data(), dw.data(), dwb.data(), dlog.data(), x.data(), w.data(), N, C, V);
    r.insert(r.end(), {lo, dxm, dw, dwb});
    F dxn(size_t(N) * Cn, 0.f);
    matmul_bwd(dxn.data(), (float*)nullptr, (float*)nullptr, dn.data(), xn.data(), wn.data(), N, Cn, Vw);
    r.push_back(dxn);
    F ao(q.size()), p(size_t(B) * NH * Tn * Tn), dq(q.size(), 0.f), dk(q.size(), 0.f),
        dv(q.size(), 0.f);
    attention_fwd(ao.data(), p.data(), q.data(), k.data(), v.data(), B, Tn, NH, hs, 0.25);
    attention_bwd(dq.data(), dk.data(), dv.data(), ao.data(), p.data(), q.data(), k.data(),
                  v.data(), B, Tn, NH, hs, 0.25);
    r.insert(r.end(), {ao, p, dq, dk, dv});
    F rq = q;
    rope_fwd(rq.data(), B, Tn, NH, hs, 10000.0);
    r.push_back(rq);
    F emb(size_t(B) * Tn * C), dwte(size_t(50) * C, 0.f), dwpe(size_t(Tn) * C, 0.f);
    embedding_fwd(emb.data(), tokens.data(), x.data(), x.data(), B, Tn, C);
    embedding_bwd(dwte.data(), dwpe.data(), emb.data(), tokens.data(), B, Tn, C);
    r.insert(r.end(), {emb, dwte, dwpe});
    F ge(x.size()), dge(x.size(), 0.f);
    gelu_fwd(ge.data(), x.data(), int64_t(x.size()));
    gelu_bwd(dge.data(), dout.data(), x.data(), int64_t(x.size()));
    r.insert(r.end(), {ge, dge});
    return r;
  };

  std::vector<F> ref;
  {
    ThreadCount tc(1);
    ref = run_all();
  }
  for (const int threads : {2, 3, 5}) {
    CAPTURE(threads);
    ThreadCount tc(threads);
    const auto got = run_all();
    REQUIRE(got.size() == ref.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      CAPTURE(i);
      CHECK(got[i] == ref[i]);  // bitwise
    }
  }
}
