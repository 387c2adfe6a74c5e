// The flash-attention kernels (kernels/attention.cuh) against the CPU reference
// (pg::cpu::attention_fwd/bwd in float64) on the same bf16-rounded random inputs.
//
// Tolerances, as ‖gpu − ref‖ / ‖ref‖ over a whole tensor: out kTolBf16 = 1e-2 (bf16 output, and P
// rounded to bf16 before P·v); dq, dk, dv kTolGemm = 2e-2 (P and dS rounded to bf16 as operands,
// out rounded to bf16 inside D); lse max |diff| 2e-3 (fp32 softmax of exact bf16 products).
// Every output is poisoned with NaN before the launch, so an element left unwritten fails.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/ops.hpp"
#include "gpu_testing.hpp"
#include "kernels/attention.cuh"

using namespace pg;
using namespace pg::test;
using kernels::AttentionDims;

namespace {

struct Case {
  int B, T, NH, hs;
  bool fused;  // q, k, v (and dq, dk, dv) as the thirds of one [B,T,3,NH,hs] buffer
};

struct Result {
  Vec out, lse, dq, dk, dv;
  Vec dbias;  // where attention_bwd_sums_bias: the q/k/v bias gradient from its partial sums [3C]
};

template <typename T>
void poison(cuda::DeviceBuffer<T>& b) {  // all-ones bytes: NaN in bf16 and fp32
  CUDA_CHECK(cudaMemset(b.data(), 0xff, b.bytes()));
}

// Columns [off, off + C) of each row of a [rows][stride] array.
Vec columns(const Vec& x, size_t rows, size_t stride, size_t off, size_t C) {
  Vec y(rows * C);
  for (size_t r = 0; r < rows; ++r)
    std::copy_n(x.begin() + ptrdiff_t(r * stride + off), C, y.begin() + ptrdiff_t(r * C));
  return y;
}

// q, k, v ([rows][C] each) as the fused layout's rows of 3C: q | k | v.
Vec fuse_qkv(const Vec& q, const Vec& k, const Vec& v, size_t rows, size_t C) {
  Vec qkv(rows * 3 * C);
  for (size_t r = 0; r < rows; ++r)
    for (size_t part = 0; part < 3; ++part) {
      const Vec& src = part == 0 ? q : part == 1 ? k : v;
      std::copy_n(src.begin() + ptrdiff_t(r * C), C, qkv.begin() + ptrdiff_t(r * 3 * C + part * C));
    }
  return qkv;
}

// Forward and backward on the GPU. Host tensors are contiguous [B,T,NH,hs].
Result run_gpu(const Case& cs, const Vec& q, const Vec& k, const Vec& v, const Vec& dout,
               kernels::AttentionBwdKernel kernel = kernels::AttentionBwdKernel::Best,
               kernels::AttentionFwdKernel fwd = kernels::AttentionFwdKernel::Best) {
  const size_t C = size_t(cs.NH) * cs.hs, rows = size_t(cs.B) * cs.T;
  const size_t stride = cs.fused ? 3 * C : C;
  cuda::DeviceBuffer<bf16> d_q = upload_bf16(cs.fused ? fuse_qkv(q, k, v, rows, C) : q), d_k, d_v;
  cuda::DeviceBuffer<bf16> d_dq(rows * stride), d_dk, d_dv;
  if (!cs.fused) {
    d_k = upload_bf16(k);
    d_v = upload_bf16(v);
    d_dk = cuda::DeviceBuffer<bf16>(rows * C);
    d_dv = cuda::DeviceBuffer<bf16>(rows * C);
  }
  const bf16 *pq = d_q.data(), *pk = cs.fused ? pq + C : d_k.data(),
             *pv = cs.fused ? pq + 2 * C : d_v.data();
  bf16 *pdq = d_dq.data(), *pdk = cs.fused ? pdq + C : d_dk.data(),
       *pdv = cs.fused ? pdq + 2 * C : d_dv.data();
  auto d_dout = upload_bf16(dout);
  cuda::DeviceBuffer<bf16> d_out(rows * C);
  cuda::DeviceBuffer<float> d_lse(size_t(cs.B) * cs.NH * cs.T);
  const AttentionDims dims{cs.B, cs.T, cs.NH, cs.hs, int64_t(stride), int64_t(C), 0.f};
  cuda::DeviceBuffer<unsigned char> ws(kernels::attention_bwd_workspace_bytes(dims));
  poison(d_out);
  poison(d_lse);
  poison(d_dq);
  if (!cs.fused) {
    poison(d_dk);
    poison(d_dv);
  }
  poison(ws);

  kernels::attention_fwd(d_out.data(), d_lse.data(), pq, pk, pv, dims, nullptr, fwd);
  const bool sums = kernels::attention_bwd_sums_bias(dims, kernel);
  const size_t part_rows = size_t(kernels::attention_bwd_bias_rows(dims));
  cuda::DeviceBuffer<float> d_part(sums ? part_rows * 3 * C : 0);
  if (sums) poison(d_part);
  kernels::attention_bwd(pdq, pdk, pdv, ws.data(), d_dout.data(), d_out.data(), d_lse.data(), pq,
                         pk, pv, dims, nullptr, kernel, sums ? d_part.data() : nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());

  Result res{download(d_out), download(d_lse), {}, {}, {}, {}};
  if (sums) {
    const Vec part = download(d_part);
    res.dbias.assign(3 * C, 0.0);
    for (size_t r = 0; r < part_rows; ++r)
      for (size_t j = 0; j < 3 * C; ++j) res.dbias[j] += part[r * 3 * C + j];
  }
  const Vec g = download(d_dq);
  res.dq = columns(g, rows, stride, 0, C);
  res.dk = cs.fused ? columns(g, rows, stride, C, C) : download(d_dk);
  res.dv = cs.fused ? columns(g, rows, stride, 2 * C, C) : download(d_dv);
  return res;
}

// lse[b,h,t] = log Σ_{s<=t} exp(scale·q_t·k_s).
Vec reference_lse(const Case& cs, const Vec& q, const Vec& k, double scale) {
  const size_t C = size_t(cs.NH) * cs.hs;
  Vec lse(size_t(cs.B) * cs.NH * cs.T), a(size_t(cs.T));
  for (int b = 0; b < cs.B; ++b)
    for (int h = 0; h < cs.NH; ++h)
      for (int t = 0; t < cs.T; ++t) {
        double mx = -INFINITY, sum = 0.0;
        for (int s = 0; s <= t; ++s) {
          double d = 0.0;
          for (int i = 0; i < cs.hs; ++i)
            d += q[(size_t(b) * cs.T + t) * C + h * cs.hs + i] *
                 k[(size_t(b) * cs.T + s) * C + h * cs.hs + i];
          a[size_t(s)] = scale * d;
          mx = std::max(mx, a[size_t(s)]);
        }
        for (int s = 0; s <= t; ++s) sum += std::exp(a[size_t(s)] - mx);
        lse[(size_t(b) * cs.NH + h) * cs.T + t] = mx + std::log(sum);
      }
  return lse;
}

double norm(const Vec& a) { return std::sqrt(dot(a, a)); }
double diff_norm(const Vec& a, const Vec& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += (a[i] - b[i]) * (a[i] - b[i]);
  return std::sqrt(s);
}
double max_abs(const Vec& a, const Vec& b) {
  double m = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::abs(a[i] - b[i]);
    if (!(d <= m)) m = d;  // NaN propagates
  }
  return m;
}

// A case's random bf16 inputs (q scaled up so that some rows are peaked, which checks the running
// max, others flat) and the CPU reference's out, and with `backward` its dq, dk, dv.
struct Problem {
  Vec q, k, v, dout, out, dq, dk, dv;
  double scale;
};
Problem make_problem(const Case& cs, uint64_t seed, bool backward) {
  Rng rng(seed);
  const int64_t n = int64_t(cs.B) * cs.T * cs.NH * cs.hs;
  Problem p;
  p.q = round_bf16(randn(rng, n, 1.5)), p.k = round_bf16(randn(rng, n)), p.v = round_bf16(randn(rng, n));
  p.dout = round_bf16(randn(rng, n));
  p.scale = 1.0 / std::sqrt(double(cs.hs));
  p.out.assign(size_t(n), 0.0);
  Vec probs(size_t(cs.B) * cs.NH * cs.T * cs.T);
  cpu::attention_fwd(p.out.data(), probs.data(), p.q.data(), p.k.data(), p.v.data(), cs.B, cs.T, cs.NH, cs.hs,
                     p.scale);
  if (backward) {
    p.dq.assign(size_t(n), 0.0), p.dk.assign(size_t(n), 0.0), p.dv.assign(size_t(n), 0.0);
    cpu::attention_bwd(p.dq.data(), p.dk.data(), p.dv.data(), p.dout.data(), probs.data(), p.q.data(), p.k.data(),
                       p.v.data(), cs.B, cs.T, cs.NH, cs.hs, p.scale);
  }
  return p;
}

}  // namespace

TEST_CASE("flash attention forward and backward match the CPU reference", "[gpu][attention]") {
  const Case cs = GENERATE(Case{1, 64, 1, 64, false}, Case{2, 100, 3, 32, false},
                           Case{2, 77, 2, 64, false}, Case{1, 200, 2, 128, false},
                           Case{3, 130, 2, 128, true}, Case{2, 257, 4, 64, true},
                           Case{1, 1, 2, 32, false}, Case{1, 33, 1, 128, false},
                           // around the 128-key and 128-query tiles: one past, exact, partial
                           Case{2, 129, 3, 64, false}, Case{1, 256, 2, 64, true},
                           Case{3, 300, 2, 64, false}, Case{2, 255, 2, 128, false},
                           Case{1, 640, 1, 64, false});
  // Best is hs = 64's warpgroup-MMA backward, MmaSync its mma.sync one (the same kernel for the
  // other head sizes).
  const auto kernel = GENERATE(kernels::AttentionBwdKernel::Best, kernels::AttentionBwdKernel::MmaSync);
  const uint64_t seed = 9000 + uint64_t(cs.B * 131 + cs.T * 7 + cs.NH * 3 + cs.hs);
  CAPTURE(cs.B, cs.T, cs.NH, cs.hs, cs.fused, int(kernel), seed);
  const Problem p = make_problem(cs, seed, true);
  const Vec &q = p.q, &k = p.k, &v = p.v, &dout = p.dout, &out = p.out, &dq = p.dq, &dk = p.dk, &dv = p.dv;
  const Vec lse = reference_lse(cs, q, k, p.scale);

  const Result gpu = run_gpu(cs, q, k, v, dout, kernel);
  CHECK(rel_diff(gpu.out, out) < kTolBf16);
  CHECK(max_abs(gpu.lse, lse) < 2e-3);
  // With a single key (T = 1) dq and dk vanish exactly while the GPU keeps the bf16 rounding
  // noise of D, so their errors are taken against max(‖ref‖, 0.1·‖dv‖): the gradients' scale.
  const double floor = 0.1 * norm(dv);
  CHECK(diff_norm(gpu.dq, dq) / std::max(norm(dq), floor) < kTolGemm);
  CHECK(diff_norm(gpu.dk, dk) / std::max(norm(dk), floor) < kTolGemm);
  CHECK(rel_diff(gpu.dv, dv) < kTolGemm);
  // The fused q/k/v bias's gradient from the partial sums (fused hs = 64 cases with Best): the
  // column sums of dq and dv; dk's are exactly zero (softmax ignores a shift of a row's logits),
  // so the GPU's are held to the scale of dv's.
  if (!gpu.dbias.empty()) {
    const size_t C = size_t(cs.NH) * cs.hs, rows = size_t(cs.B) * cs.T;
    Vec sq(C, 0.0), sk(C, 0.0), sv(C, 0.0);
    for (size_t r = 0; r < rows; ++r)
      for (size_t j = 0; j < C; ++j) sq[j] += dq[r * C + j], sk[j] += dk[r * C + j], sv[j] += dv[r * C + j];
    const Vec gq(gpu.dbias.begin(), gpu.dbias.begin() + ptrdiff_t(C));
    const Vec gk(gpu.dbias.begin() + ptrdiff_t(C), gpu.dbias.begin() + ptrdiff_t(2 * C));
    const Vec gv(gpu.dbias.begin() + ptrdiff_t(2 * C), gpu.dbias.end());
    CHECK(diff_norm(gq, sq) / std::max(norm(sq), 0.1 * norm(sv)) < kTolGemm);
    CHECK(diff_norm(gk, sk) / norm(sv) < kTolGemm);
    CHECK(rel_diff(gv, sv) < kTolGemm);
  }
}

TEST_CASE("flash attention forward, the pipelined kernels, match the CPU reference", "[gpu][attention]") {
  // Around the 64- and 128-key tiles and the 128-row query tiles: one key, partial, exact, one
  // past, several tiles; hs 64 and 128.
  const Case cs = GENERATE(Case{1, 1, 2, 64, false}, Case{2, 77, 2, 64, false}, Case{2, 128, 3, 64, true},
                           Case{2, 129, 3, 64, false}, Case{3, 300, 2, 64, false}, Case{1, 640, 1, 64, false},
                           Case{1, 200, 2, 128, false}, Case{3, 130, 2, 128, true}, Case{2, 255, 2, 128, false});
  const auto fwd = kernels::AttentionFwdKernel::WgmmaPipe;  // hs = 128's Best
  const uint64_t seed = 7100 + uint64_t(cs.B * 131 + cs.T * 7 + cs.NH * 3 + cs.hs);
  CAPTURE(cs.B, cs.T, cs.NH, cs.hs, cs.fused, int(fwd), seed);
  const Problem p = make_problem(cs, seed, false);
  const Result gpu = run_gpu(cs, p.q, p.k, p.v, p.dout, kernels::AttentionBwdKernel::Best, fwd);
  CHECK(rel_diff(gpu.out, p.out) < kTolBf16);
  CHECK(max_abs(gpu.lse, reference_lse(cs, p.q, p.k, p.scale)) < 2e-3);
}

TEST_CASE("flash attention: out, lse, dk, dv bitwise reproducible; dq to atomics' order",
          "[gpu][attention]") {
  const Case cs = GENERATE(Case{1, 150, 2, 64, false}, Case{1, 100, 1, 128, true});
  const uint64_t seed = 4242;
  CAPTURE(cs.T, cs.hs, seed);
  Rng rng(seed);
  const int64_t n = int64_t(cs.B) * cs.T * cs.NH * cs.hs;
  const Vec q = round_bf16(randn(rng, n)), k = round_bf16(randn(rng, n)),
            v = round_bf16(randn(rng, n)), dout = round_bf16(randn(rng, n));
  const Result a = run_gpu(cs, q, k, v, dout), b = run_gpu(cs, q, k, v, dout);
  CHECK(a.out == b.out);
  CHECK(a.lse == b.lse);
  CHECK(a.dk == b.dk);
  CHECK(a.dv == b.dv);
  // dq sums the key tiles in whatever order the fp32 atomics land: equal up to fp32 rounding
  // before the final bf16 rounding, so at most one bf16 step apart per element.
  CHECK(rel_diff(a.dq, b.dq) < 4e-3);
}

TEST_CASE("flash attention backward: dq accumulated in the caller's zeroed buffer, the next one cleared",
          "[gpu][attention]") {
  // kernels::AttentionBwdAcc as a model's layers chain it: call 1 accumulates in a zeroed buffer A
  // and clears B (poisoned with NaN); call 2 accumulates in B and clears A; then A is poisoned
  // again and call 3 uses the workspace's accumulator and clears A. Each call's gradients against
  // the CPU reference. hs 64's Best kernel clears in its blocks, the other head sizes by a memset.
  const Case cs = GENERATE(Case{2, 129, 3, 64, false}, Case{1, 300, 2, 64, true}, Case{2, 100, 3, 32, false},
                           Case{1, 200, 2, 128, false});
  const uint64_t seed = 5300 + uint64_t(cs.B * 131 + cs.T * 7 + cs.NH * 3 + cs.hs);
  CAPTURE(cs.B, cs.T, cs.NH, cs.hs, cs.fused, seed);
  const Problem p = make_problem(cs, seed, true);
  const Vec &q = p.q, &k = p.k, &v = p.v, &dout = p.dout, &dq = p.dq, &dk = p.dk, &dv = p.dv;
  const int64_t n = int64_t(q.size());

  const size_t C = size_t(cs.NH) * cs.hs, rows = size_t(cs.B) * cs.T, stride = cs.fused ? 3 * C : C;
  auto d_qkv = upload_bf16(cs.fused ? fuse_qkv(q, k, v, rows, C) : q);
  auto d_k = upload_bf16(k), d_v = upload_bf16(v), d_dout = upload_bf16(dout);
  const bf16* pq = d_qkv.data();
  const bf16 *pk = cs.fused ? pq + C : d_k.data(), *pv = cs.fused ? pq + 2 * C : d_v.data();
  cuda::DeviceBuffer<bf16> d_grad(rows * 3 * C);  // dq, dk, dv: fused thirds, or three [rows][C] blocks
  bf16* pdq = d_grad.data();
  bf16 *pdk = cs.fused ? pdq + C : pdq + rows * C, *pdv = cs.fused ? pdq + 2 * C : pdq + 2 * rows * C;
  cuda::DeviceBuffer<bf16> d_out(rows * C);
  cuda::DeviceBuffer<float> d_lse{size_t(cs.B) * cs.NH * cs.T}, acc_a{size_t(n)}, acc_b{size_t(n)};
  const AttentionDims dims{cs.B, cs.T, cs.NH, cs.hs, int64_t(stride), int64_t(C), 0.f};
  cuda::DeviceBuffer<unsigned char> ws(kernels::attention_bwd_workspace_bytes(dims));
  poison(ws);
  kernels::attention_fwd(d_out.data(), d_lse.data(), pq, pk, pv, dims, nullptr);
  CUDA_CHECK(cudaMemset(acc_a.data(), 0, acc_a.bytes()));
  poison(acc_b);

  auto call = [&](float* zeroed, float* clear_next) {
    poison(d_grad);
    kernels::AttentionBwdAcc acc;
    acc.zeroed = zeroed, acc.clear_next = clear_next;
    kernels::attention_bwd(pdq, pdk, pdv, ws.data(), d_dout.data(), d_out.data(), d_lse.data(), pq, pk, pv, dims,
                           nullptr, kernels::AttentionBwdKernel::Best, nullptr, acc);
    CUDA_CHECK(cudaDeviceSynchronize());
    const Vec g = download(d_grad);
    const Vec gq = cs.fused ? columns(g, rows, stride, 0, C) : Vec(g.begin(), g.begin() + ptrdiff_t(rows * C));
    const Vec gk = cs.fused ? columns(g, rows, stride, C, C)
                            : Vec(g.begin() + ptrdiff_t(rows * C), g.begin() + ptrdiff_t(2 * rows * C));
    const Vec gv = cs.fused ? columns(g, rows, stride, 2 * C, C) : Vec(g.begin() + ptrdiff_t(2 * rows * C), g.end());
    CHECK(rel_diff(gq, dq) < kTolGemm);
    CHECK(rel_diff(gk, dk) < kTolGemm);
    CHECK(rel_diff(gv, dv) < kTolGemm);
  };
  auto all_zero = [](const cuda::DeviceBuffer<float>& b) {
    const Vec x = download(b);
    return std::all_of(x.begin(), x.end(), [](double e) { return e == 0.0; });
  };
  call(acc_a.data(), acc_b.data());  // 1
  CHECK(all_zero(acc_b));
  CHECK_FALSE(all_zero(acc_a));  // it holds call 1's sums
  call(acc_b.data(), acc_a.data());  // 2
  CHECK(all_zero(acc_a));
  poison(acc_a);
  call(nullptr, acc_a.data());  // 3
  CHECK(all_zero(acc_a));
  // A buffer the call itself uses cannot be cleared for the next.
  kernels::AttentionBwdAcc same;
  same.zeroed = same.clear_next = acc_b.data();
  CHECK_THROWS_WITH(kernels::attention_bwd(pdq, pdk, pdv, ws.data(), d_dout.data(), d_out.data(), d_lse.data(), pq, pk,
                                           pv, dims, nullptr, kernels::AttentionBwdKernel::Best, nullptr, same),
                    Catch::Contains("clear_next"));
}
