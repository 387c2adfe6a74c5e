// The flash-attention kernels (kernels/attention.cu) against the CPU reference
// (pg::cpu::attention_fwd/bwd in fp32) on the same bf16-rounded random inputs.
//
// Tolerances, as ‖gpu − cpu‖ / ‖cpu‖ over a whole tensor: out 1e-2 (bf16 output, and P rounded to
// bf16 before P·v: each ~2^-9 relative per element); dq, dk, dv 2e-2 (dS and P rounded to bf16 for
// the products, out rounded to bf16 inside D); lse max |diff| 2e-3 (fp32 softmax of exact bf16 products).
// Every output is poisoned with NaN before the launch, so an element left unwritten fails.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/ops.hpp"
#include "backend/ops_testing.hpp"
#include "core/rng.hpp"
#include "kernels/attention.cuh"

namespace {

using pg::kernels::AttentionDims;
using pg::test::rel_diff;

#define ATTN_CUDA_OK(call) REQUIRE((call) == cudaSuccess)

bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

// A device buffer of n elements of T, freed on scope exit.
template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(size_t count) : n(count) {
    REQUIRE(cudaMalloc(&ptr, std::max<size_t>(n, 1) * sizeof(T)) == cudaSuccess);
  }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void poison() { ATTN_CUDA_OK(cudaMemset(ptr, 0xff, n * sizeof(T))); }  // NaN in bf16 and fp32
  void upload(const std::vector<T>& h) {
    ATTN_CUDA_OK(cudaMemcpy(ptr, h.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> h(n);
    ATTN_CUDA_OK(cudaMemcpy(h.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};

std::vector<__nv_bfloat16> to_bf16(const std::vector<float>& x) {
  std::vector<__nv_bfloat16> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = __float2bfloat16(x[i]);
  return y;
}
std::vector<float> to_float(const std::vector<__nv_bfloat16>& x) {
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = __bfloat162float(x[i]);
  return y;
}
// Random normal values already rounded to bf16 (so GPU and CPU see the same numbers).
std::vector<float> randn_bf16(pg::Rng& rng, size_t n, double sd) {
  std::vector<float> x(n);
  for (auto& v : x) v = __bfloat162float(__float2bfloat16(float(sd * rng.normal())));
  return x;
}

// Columns [off, off + C) of each of the rows of a [rows][stride] array.
std::vector<float> columns(const std::vector<float>& x, size_t rows, size_t stride, size_t off,
                           size_t C) {
  std::vector<float> y(rows * C);
  for (size_t r = 0; r < rows; ++r)
    std::memcpy(&y[r * C], &x[r * stride + off], C * sizeof(float));
  return y;
}

struct Case {
  int B, T, NH, hs;
  bool fused;  // q, k, v (and dq, dk, dv) as the thirds of one [B,T,3,NH,hs] buffer
};

struct Result {
  std::vector<float> out, lse, dq, dk, dv;
};

// Runs forward and backward on the GPU. All tensors on the host are contiguous [B,T,NH,hs].
Result run_gpu(const Case& cs, const std::vector<float>& q, const std::vector<float>& k,
               const std::vector<float>& v, const std::vector<float>& dout) {
  const size_t C = size_t(cs.NH) * cs.hs, rows = size_t(cs.B) * cs.T;
  const size_t stride = cs.fused ? 3 * C : C;
  std::vector<float> qkv(rows * stride, 0.f);
  const size_t offs[3] = {0, cs.fused ? C : 0, cs.fused ? 2 * C : 0};
  DeviceBuffer<__nv_bfloat16> d_q(rows * stride), d_k(cs.fused ? 0 : rows * C),
      d_v(cs.fused ? 0 : rows * C), d_dq(rows * stride), d_dk(cs.fused ? 0 : rows * C),
      d_dv(cs.fused ? 0 : rows * C), d_out(rows * C), d_dout(rows * C);
  __nv_bfloat16 *pq = d_q.ptr, *pk = cs.fused ? d_q.ptr + C : d_k.ptr,
                *pv = cs.fused ? d_q.ptr + 2 * C : d_v.ptr;
  __nv_bfloat16 *pdq = d_dq.ptr, *pdk = cs.fused ? d_dq.ptr + C : d_dk.ptr,
                *pdv = cs.fused ? d_dq.ptr + 2 * C : d_dv.ptr;
  if (cs.fused) {
    for (size_t r = 0; r < rows; ++r)
      for (int part = 0; part < 3; ++part) {
        const std::vector<float>& src = part == 0 ? q : part == 1 ? k : v;
        std::memcpy(&qkv[r * stride + offs[part]], &src[r * C], C * sizeof(float));
      }
    d_q.upload(to_bf16(qkv));
  } else {
    d_q.upload(to_bf16(q));
    d_k.upload(to_bf16(k));
    d_v.upload(to_bf16(v));
  }
  d_dout.upload(to_bf16(dout));
  DeviceBuffer<float> d_lse(size_t(cs.B) * cs.NH * cs.T);
  d_out.poison();
  d_lse.poison();
  d_dq.poison();
  d_dk.poison();
  d_dv.poison();

  AttentionDims dims{cs.B, cs.T, cs.NH, cs.hs, int64_t(stride), int64_t(C), 0.f};
  DeviceBuffer<unsigned char> ws(pg::kernels::attention_bwd_workspace_bytes(dims));
  ws.poison();
  pg::kernels::attention_fwd(d_out.ptr, d_lse.ptr, pq, pk, pv, dims, nullptr);
  pg::kernels::attention_bwd(pdq, pdk, pdv, ws.ptr, d_dout.ptr, d_out.ptr, d_lse.ptr, pq, pk, pv,
                             dims, nullptr);
  ATTN_CUDA_OK(cudaDeviceSynchronize());

  Result res;
  res.out = to_float(d_out.download());
  res.lse = d_lse.download();
  const std::vector<float> g = to_float(d_dq.download());
  res.dq = columns(g, rows, stride, 0, C);
  res.dk = cs.fused ? columns(g, rows, stride, C, C) : to_float(d_dk.download());
  res.dv = cs.fused ? columns(g, rows, stride, 2 * C, C) : to_float(d_dv.download());
  return res;
}

// lse[b,h,t] = log Σ_{s<=t} exp(scale·q_t·k_s), in double.
std::vector<float> reference_lse(const Case& cs, const std::vector<float>& q,
                                 const std::vector<float>& k, double scale) {
  const size_t C = size_t(cs.NH) * cs.hs;
  std::vector<float> lse(size_t(cs.B) * cs.NH * cs.T);
  std::vector<double> a(size_t(cs.T));
  for (int b = 0; b < cs.B; ++b)
    for (int h = 0; h < cs.NH; ++h)
      for (int t = 0; t < cs.T; ++t) {
        double mx = -INFINITY, sum = 0.0;
        for (int s = 0; s <= t; ++s) {
          double d = 0.0;
          for (int i = 0; i < cs.hs; ++i)
            d += double(q[(size_t(b) * cs.T + t) * C + h * cs.hs + i]) *
                 double(k[(size_t(b) * cs.T + s) * C + h * cs.hs + i]);
          a[size_t(s)] = scale * d;
          mx = std::max(mx, a[size_t(s)]);
        }
        for (int s = 0; s <= t; ++s) sum += std::exp(a[size_t(s)] - mx);
        lse[(size_t(b) * cs.NH + h) * cs.T + t] = float(mx + std::log(sum));
      }
  return lse;
}

double l2(const std::vector<float>& a) {
  double s = 0.0;
  for (float x : a) s += double(x) * double(x);
  return std::sqrt(s);
}
double diff_norm(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
  return std::sqrt(s);
}

double max_abs(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::abs(double(a[i]) - double(b[i]));
    if (!(d <= m)) m = d;  // NaN propagates
  }
  return m;
}

}  // namespace

TEST_CASE("flash attention forward and backward match the CPU reference", "[gpu]") {
  if (!have_gpu()) {
    WARN("SKIPPED: no CUDA device");
    return;
  }
  const Case cs = GENERATE(Case{1, 64, 1, 64, false}, Case{2, 100, 3, 32, false},
                           Case{2, 77, 2, 64, false}, Case{1, 200, 2, 128, false},
                           Case{3, 130, 2, 128, true}, Case{2, 257, 4, 64, true},
                           Case{1, 1, 2, 32, false}, Case{1, 33, 1, 128, false});
  const uint64_t seed = 9000 + uint64_t(cs.B * 131 + cs.T * 7 + cs.NH * 3 + cs.hs);
  CAPTURE(cs.B, cs.T, cs.NH, cs.hs, cs.fused, seed);
  pg::Rng rng(seed);
  const size_t n = size_t(cs.B) * cs.T * cs.NH * cs.hs;
  // q scaled up so that some rows are peaked (checks the running max), others flat.
  const auto q = randn_bf16(rng, n, 1.5), k = randn_bf16(rng, n, 1.0),
             v = randn_bf16(rng, n, 1.0), dout = randn_bf16(rng, n, 1.0);
  const double scale = 1.0 / std::sqrt(double(cs.hs));

  std::vector<float> out(n), probs(size_t(cs.B) * cs.NH * cs.T * cs.T);
  pg::cpu::attention_fwd<float>(out.data(), probs.data(), q.data(), k.data(), v.data(), cs.B, cs.T,
                                cs.NH, cs.hs, scale);
  std::vector<float> dq(n, 0.f), dk(n, 0.f), dv(n, 0.f);
  pg::cpu::attention_bwd<float>(dq.data(), dk.data(), dv.data(), dout.data(), probs.data(),
                                q.data(), k.data(), v.data(), cs.B, cs.T, cs.NH, cs.hs, scale);
  const auto lse = reference_lse(cs, q, k, scale);

  const Result gpu = run_gpu(cs, q, k, v, dout);
  CHECK(rel_diff(gpu.out, out) < 1e-2);
  CHECK(max_abs(gpu.lse, lse) < 2e-3);
  // With a single key (T = 1) dq and dk vanish exactly on the CPU while the GPU keeps bf16
  // rounding noise of D; errors are measured against max(‖ref‖, 0.1·‖dv‖) so that case is judged
  // on the gradients' common scale.
  const double floor_norm = 0.1 * l2(dv);
  CHECK(diff_norm(gpu.dq, dq) / std::max(l2(dq), floor_norm) < 2e-2);
  CHECK(diff_norm(gpu.dk, dk) / std::max(l2(dk), floor_norm) < 2e-2);
  CHECK(rel_diff(gpu.dv, dv) < 2e-2);
}

TEST_CASE("flash attention: out, lse, dk, dv are bitwise reproducible; dq to fp32 atomics' order",
          "[gpu]") {
  if (!have_gpu()) {
    WARN("SKIPPED: no CUDA device");
    return;
  }
  const Case cs = GENERATE(Case{1, 150, 2, 64, false}, Case{1, 100, 1, 128, true});
  const uint64_t seed = 4242;
  CAPTURE(cs.T, cs.hs, seed);
  pg::Rng rng(seed);
  const size_t n = size_t(cs.B) * cs.T * cs.NH * cs.hs;
  const auto q = randn_bf16(rng, n, 1.0), k = randn_bf16(rng, n, 1.0),
             v = randn_bf16(rng, n, 1.0), dout = randn_bf16(rng, n, 1.0);
  const Result a = run_gpu(cs, q, k, v, dout), b = run_gpu(cs, q, k, v, dout);
  CHECK(std::memcmp(a.out.data(), b.out.data(), n * sizeof(float)) == 0);
  CHECK(std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * sizeof(float)) == 0);
  CHECK(std::memcmp(a.dk.data(), b.dk.data(), n * sizeof(float)) == 0);
  CHECK(std::memcmp(a.dv.data(), b.dv.data(), n * sizeof(float)) == 0);
  // dq sums key tiles in whatever order the atomics land: equal up to fp32 rounding before the
  // final bf16 rounding, so at most one bf16 step apart per element.
  CHECK(rel_diff(a.dq, b.dq) < 4e-3);
}
