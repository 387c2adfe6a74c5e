// The cuBLASLt GEMM layer (backend/cuda/gemm.hpp) against float64 loops on the same bf16 inputs:
// every transpose combination, alpha/beta, fp32 and bf16 outputs, bias and bias+GELU epilogues
// (also storing the pre-activation, and the GELU-gradient epilogue, with the bias gradient too),
// strided batches (as Newton-Schulz uses them, and with per-batch biases and GELU aux as the MoE
// experts use them), a bf16 residual scaled by beta (separate input or
// in place), the linear layer against cpu::matmul_fwd/bwd,
// the per-shape plan cache, and autotuning (in-place accumulation survives the trials).
// Tolerances: fp32 output 5e-4 (fp32 accumulation on the tensor cores over K <= 256);
// bf16 output kTolBf16.
#include <catch2/catch.hpp>

#include "backend/cpu/ops.hpp"
#include "backend/cuda/gemm.hpp"
#include "gpu_testing.hpp"
#include "kernels/bias.cuh"

using namespace pg;
using namespace pg::test;

namespace {

constexpr double kTolGemmF32 = 5e-4;

// Row-major C = alpha·op(A)·op(B) + beta·C0 for one batch in float64.
Vec ref_gemm(const Vec& A, bool ta, const Vec& B, bool tb, const Vec& C0, int M, int N, int K,
             double alpha, double beta) {
  Vec C(size_t(M) * N);
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double s = 0.0;
      for (int k = 0; k < K; ++k) {
        const double a = ta ? A[size_t(k) * M + m] : A[size_t(m) * K + k];
        const double b = tb ? B[size_t(n) * K + k] : B[size_t(k) * N + n];
        s += a * b;
      }
      C[size_t(m) * N + n] = alpha * s + beta * (C0.empty() ? 0.0 : C0[size_t(m) * N + n]);
    }
  return C;
}

// A test's random stream (its seed captured in the body for failure messages), CUDA stream and
// GEMM runner, as TEST_CASE_METHOD members.
struct GemmCase {
  uint64_t seed = 0;
  Rng rng;
  cuda::Stream stream;
  cuda::GemmRunner runner{stream.get()};
  void use_seed(uint64_t s) { seed = s, rng.reseed(s); }
};

}  // namespace

TEST_CASE_METHOD(GemmCase, "gpu gemm: transposes, alpha and beta, fp32 output", "[gpu][gemm]") {
  use_seed(911);
  CAPTURE(seed);
  const int M = 37, N = 64, K = 96;
  for (int t = 0; t < 4; ++t) {
    const bool ta = t & 1, tb = t & 2;
    CAPTURE(ta, tb);
    const Vec A = round_bf16(randn(rng, int64_t(M) * K)), B = round_bf16(randn(rng, int64_t(K) * N));
    const Vec C0 = randn(rng, int64_t(M) * N);
    auto dA = upload_bf16(A), dB = upload_bf16(B);
    auto dC = upload_f32(C0);
    cuda::GemmArgs g;
    g.M = M, g.N = N, g.K = K, g.A = dA.data(), g.trans_a = ta, g.B = dB.data(), g.trans_b = tb;
    g.C = dC.data(), g.out_type = cuda::OutType::F32, g.alpha = 0.5f, g.beta = 0.75f;
    runner.gemm(g);
    stream.synchronize();
    CHECK(rel_diff(download(dC), ref_gemm(A, ta, B, tb, C0, M, N, K, 0.5, 0.75)) < kTolGemmF32);
  }
  CHECK(runner.cached_plans() == 4);
}

TEST_CASE_METHOD(GemmCase, "gpu gemm: bf16 output with bias and bias+GELU epilogues", "[gpu][gemm]") {
  use_seed(912);
  CAPTURE(seed);
  const int M = 48, N = 80, K = 64;  // linear layer: inp[M,K] · w[N,K]^T + bias[N]
  const Vec A = round_bf16(randn(rng, int64_t(M) * K)), W = round_bf16(randn(rng, int64_t(N) * K, 0.2));
  const Vec bias = round_bf16(randn(rng, N));
  auto dA = upload_bf16(A), dW = upload_bf16(W), dbias = upload_bf16(bias);
  cuda::DeviceBuffer<bf16> dC(size_t(M) * N);
  Vec ref(size_t(M) * N);
  cpu::matmul_fwd(ref.data(), A.data(), W.data(), bias.data(), M, K, N);
  cuda::GemmArgs g;
  g.M = M, g.N = N, g.K = K, g.A = dA.data(), g.B = dW.data(), g.trans_b = true, g.C = dC.data();
  g.out_type = cuda::OutType::BF16, g.epilogue = cuda::Epilogue::Bias, g.bias = dbias.data();
  runner.gemm(g);
  stream.synchronize();
  CHECK(rel_diff(download(dC), ref) < kTolBf16);

  Vec ref_gelu(ref.size());
  cpu::gelu_fwd(ref_gelu.data(), ref.data(), int64_t(ref.size()));
  g.epilogue = cuda::Epilogue::BiasGelu;
  runner.gemm(g);
  stream.synchronize();
  CHECK(rel_diff(download(dC), ref_gelu) < kTolBf16);
}

TEST_CASE_METHOD(GemmCase,
                 "gpu gemm: GELU with the pre-activation in aux, and the GELU-gradient epilogue", "[gpu][gemm]") {
  use_seed(916);
  CAPTURE(seed);
  const int M = 48, N = 80, K = 64;  // fc: act = gelu(inp[M,K]·w[N,K]^T + bias), pre kept in aux
  const Vec A = round_bf16(randn(rng, int64_t(M) * K)), W = round_bf16(randn(rng, int64_t(N) * K, 0.2));
  const Vec bias = round_bf16(randn(rng, N));
  auto dA = upload_bf16(A), dW = upload_bf16(W), dbias = upload_bf16(bias);
  cuda::DeviceBuffer<bf16> dC(size_t(M) * N), dpre(size_t(M) * N);
  Vec pre(size_t(M) * N), act(size_t(M) * N);
  cpu::matmul_fwd(pre.data(), A.data(), W.data(), bias.data(), M, K, N);
  cpu::gelu_fwd(act.data(), pre.data(), int64_t(pre.size()));
  cuda::GemmArgs g;
  g.M = M, g.N = N, g.K = K, g.A = dA.data(), g.B = dW.data(), g.trans_b = true, g.C = dC.data();
  g.out_type = cuda::OutType::BF16, g.epilogue = cuda::Epilogue::BiasGeluAux, g.bias = dbias.data();
  g.aux = dpre.data();
  runner.gemm(g);
  stream.synchronize();
  CHECK(rel_diff(download(dC), act) < kTolBf16);
  const Vec pre_gpu = download(dpre);
  CHECK(rel_diff(pre_gpu, pre) < kTolBf16);

  // Backward: dpre[M,N] = (dout[M,P]·w2[P,N]) ∘ gelu'(pre), with pre the bf16 aux stored above.
  const int Pn = 32;
  const Vec D = round_bf16(randn(rng, int64_t(M) * Pn)), W2 = round_bf16(randn(rng, int64_t(Pn) * N, 0.2));
  auto dD = upload_bf16(D), dW2 = upload_bf16(W2);
  const Vec prod = ref_gemm(D, false, W2, false, {}, M, N, Pn, 1.0, 0.0);
  Vec dref(prod.size(), 0.0);
  cpu::gelu_bwd(dref.data(), prod.data(), pre_gpu.data(), int64_t(prod.size()));
  cuda::GemmArgs d;
  d.M = M, d.N = N, d.K = Pn, d.A = dD.data(), d.B = dW2.data(), d.C = dC.data(), d.out_type = cuda::OutType::BF16;
  d.epilogue = cuda::Epilogue::DGelu, d.aux = dpre.data();
  runner.gemm(d);
  stream.synchronize();
  CHECK(rel_diff(download(dC), dref) < kTolBf16);

  // The same with the column sums of dpre (the fc bias's gradient) from the epilogue, fp32, where
  // this cuBLASLt fuses it (CudaGpt falls back to bias_bwd otherwise).
  Vec dbias_ref(size_t(N), 0.0);
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) dbias_ref[size_t(n)] += dref[size_t(m) * N + n];
  cuda::DeviceBuffer<float> d_dbias{size_t(N)};
  d.epilogue = cuda::Epilogue::DGeluBiasGrad, d.bias_grad = d_dbias.data();
  if (runner.supports(d)) {
    runner.gemm(d);
    stream.synchronize();
    CHECK(rel_diff(download(dC), dref) < kTolBf16);
    CHECK(rel_diff(download(d_dbias), dbias_ref) < kTolBf16);
  } else {
    WARN("cuBLASLt has no DGELU_BGRAD with an fp32 bias gradient for a bf16 output here");
  }
}

TEST_CASE_METHOD(GemmCase,
                 "gpu gemm: strided batches with per-batch bias, GELU aux, GELU-gradient and bias-gradient epilogues",
                 "[gpu][gemm]") {
  // The expert GEMMs of an MoE block: batch e multiplies its own rows by its own weights and adds
  // its own bias (stride_bias), keeping its pre-activation at aux + e·stride_aux; the backward's
  // dX GEMM multiplies by gelu'(aux) of its own batch, its dW GEMM yields each batch's bias
  // gradient. Random inputs; bf16 outputs kTolBf16, fp32 outputs kTolGemmF32.
  use_seed(917);
  CAPTURE(seed);
  const int batch = 5, M = 40, N = 48, K = 64, Pn = 32;  // rows per batch, out width, in width
  const Vec A = round_bf16(randn(rng, int64_t(batch) * M * K)), W = round_bf16(randn(rng, int64_t(batch) * N * K, 0.2));
  const Vec bias = round_bf16(randn(rng, int64_t(batch) * N));
  auto dA = upload_bf16(A), dW = upload_bf16(W), dbias = upload_bf16(bias);
  cuda::DeviceBuffer<bf16> dC(size_t(batch) * M * N), dpre(size_t(batch) * M * N), dO(size_t(batch) * M * N);
  cuda::GemmArgs g;
  g.M = M, g.N = N, g.K = K, g.A = dA.data(), g.B = dW.data(), g.trans_b = true, g.C = dC.data();
  g.out_type = cuda::OutType::BF16, g.batch = batch;
  g.stride_a = int64_t(M) * K, g.stride_b = int64_t(N) * K, g.stride_c = int64_t(M) * N;
  g.epilogue = cuda::Epilogue::BiasGeluAux, g.bias = dbias.data(), g.stride_bias = N;
  g.aux = dpre.data(), g.stride_aux = int64_t(M) * N;
  REQUIRE(runner.supports(g));
  runner.gemm(g);
  cuda::GemmArgs b = g;  // the bias alone, into another output
  b.C = dO.data(), b.epilogue = cuda::Epilogue::Bias, b.aux = nullptr, b.stride_aux = 0;
  REQUIRE(runner.supports(b));
  runner.gemm(b);
  stream.synchronize();
  const Vec act = download(dC), pre_gpu = download(dpre), lin = download(dO);
  const Vec D = round_bf16(randn(rng, int64_t(batch) * M * Pn)), W2 = round_bf16(randn(rng, int64_t(batch) * Pn * N, 0.2));
  auto dD = upload_bf16(D), dW2 = upload_bf16(W2);
  cuda::GemmArgs d;  // dpre[b] = (D[b]·W2[b]) ∘ gelu'(pre[b])
  d.M = M, d.N = N, d.K = Pn, d.A = dD.data(), d.B = dW2.data(), d.C = dC.data(), d.out_type = cuda::OutType::BF16;
  d.batch = batch, d.stride_a = int64_t(M) * Pn, d.stride_b = int64_t(Pn) * N, d.stride_c = int64_t(M) * N;
  d.epilogue = cuda::Epilogue::DGelu, d.aux = dpre.data(), d.stride_aux = int64_t(M) * N;
  REQUIRE(runner.supports(d));
  runner.gemm(d);
  // The dW GEMM dW[b] = D[b]^T·A[b] (fp32) with each batch's bias gradient Σ_rows D[b] on the way.
  cuda::DeviceBuffer<float> dWg(size_t(batch) * Pn * K), dbg(size_t(batch) * Pn);
  cuda::GemmArgs w;
  w.M = Pn, w.N = K, w.K = M, w.A = dD.data(), w.trans_a = true, w.B = dA.data(), w.C = dWg.data();
  w.batch = batch, w.stride_a = int64_t(M) * Pn, w.stride_b = int64_t(M) * K, w.stride_c = int64_t(Pn) * K;
  w.epilogue = cuda::Epilogue::BiasGradA, w.bias_grad = dbg.data(), w.stride_bias = Pn;
  REQUIRE(runner.supports(w));
  runner.gemm(w);
  stream.synchronize();
  const Vec dgrad = download(dC), wgrad = download(dWg), bgrad = download(dbg);
  for (int e = 0; e < batch; ++e) {
    CAPTURE(e);
    auto part = [&](const Vec& v, int64_t n) { return Vec(v.begin() + e * n, v.begin() + (e + 1) * n); };
    const Vec Ae = part(A, int64_t(M) * K), We = part(W, int64_t(N) * K), be = part(bias, N);
    Vec pre(size_t(M) * N), ref_act(size_t(M) * N);
    cpu::matmul_fwd(pre.data(), Ae.data(), We.data(), be.data(), M, K, N);
    cpu::gelu_fwd(ref_act.data(), pre.data(), int64_t(pre.size()));
    CHECK(rel_diff(part(pre_gpu, int64_t(M) * N), pre) < kTolBf16);
    CHECK(rel_diff(part(lin, int64_t(M) * N), pre) < kTolBf16);
    CHECK(rel_diff(part(act, int64_t(M) * N), ref_act) < kTolBf16);
    const Vec prod = ref_gemm(part(D, int64_t(M) * Pn), false, part(W2, int64_t(Pn) * N), false, {}, M, N, Pn, 1.0, 0.0);
    Vec dref(prod.size());
    const Vec pre_e = part(pre_gpu, int64_t(M) * N);
    cpu::gelu_bwd(dref.data(), prod.data(), pre_e.data(), int64_t(prod.size()));
    CHECK(rel_diff(part(dgrad, int64_t(M) * N), dref) < kTolBf16);
    const Vec De = part(D, int64_t(M) * Pn);
    CHECK(rel_diff(part(wgrad, int64_t(Pn) * K), ref_gemm(De, true, Ae, false, {}, Pn, K, M, 1.0, 0.0)) < kTolGemmF32);
    Vec bref(size_t(Pn), 0.0);
    for (int r = 0; r < M; ++r)
      for (int p = 0; p < Pn; ++p) bref[size_t(p)] += De[size_t(r) * Pn + p];
    CHECK(rel_diff(part(bgrad, Pn), bref) < kTolGemmF32);
  }
}

TEST_CASE_METHOD(GemmCase, "gpu gemm: strided batches, X·X^T as in Newton-Schulz", "[gpu][gemm]") {
  use_seed(913);
  CAPTURE(seed);
  const int batch = 3, R = 32, Ccols = 72;
  const Vec X = round_bf16(randn(rng, int64_t(batch) * R * Ccols));
  auto dX = upload_bf16(X);
  cuda::DeviceBuffer<float> dG(size_t(batch) * R * R);
  cuda::GemmArgs g;
  g.M = R, g.N = R, g.K = Ccols, g.A = dX.data(), g.B = dX.data(), g.trans_b = true;
  g.C = dG.data(), g.batch = batch, g.stride_a = g.stride_b = int64_t(R) * Ccols;
  g.stride_c = int64_t(R) * R;
  runner.gemm(g);
  stream.synchronize();
  const Vec G = download(dG);
  for (int b = 0; b < batch; ++b) {
    CAPTURE(b);
    const Vec Xb(X.begin() + int64_t(b) * R * Ccols, X.begin() + int64_t(b + 1) * R * Ccols);
    const Vec Gb(G.begin() + int64_t(b) * R * R, G.begin() + int64_t(b + 1) * R * R);
    CHECK(rel_diff(Gb, ref_gemm(Xb, false, Xb, true, {}, R, R, Ccols, 1.0, 0.0)) < kTolGemmF32);
  }
}

TEST_CASE_METHOD(GemmCase, "gpu gemm: linear layer backward matches cpu::matmul_bwd", "[gpu][gemm]") {
  use_seed(914);
  CAPTURE(seed);
  const int Nrows = 64, IC = 96, OC = 40;
  const Vec inp = round_bf16(randn(rng, int64_t(Nrows) * IC));
  const Vec w = round_bf16(randn(rng, int64_t(OC) * IC, 0.3));
  const Vec dout = round_bf16(randn(rng, int64_t(Nrows) * OC));
  AccumGrad dw_ref(rng, int64_t(OC) * IC);
  Vec dinp_ref(size_t(Nrows) * IC, 0.0);
  auto dw_gpu = upload_f32(dw_ref.start);
  cpu::matmul_bwd(dinp_ref.data(), dw_ref.data(), nullptr, dout.data(), inp.data(), w.data(), Nrows, IC, OC);
  auto d_inp = upload_bf16(inp), d_w = upload_bf16(w), d_dout = upload_bf16(dout);
  cuda::DeviceBuffer<bf16> d_dinp(size_t(Nrows) * IC);
  // dinp[N,IC] = dout[N,OC] · w[OC,IC]
  cuda::GemmArgs g;
  g.M = Nrows, g.N = IC, g.K = OC, g.A = d_dout.data(), g.B = d_w.data(), g.C = d_dinp.data();
  g.out_type = cuda::OutType::BF16;
  runner.gemm(g);
  // dw[OC,IC] += dout^T · inp (fp32 gradient, accumulated: beta = 1)
  cuda::GemmArgs h;
  h.M = OC, h.N = IC, h.K = Nrows, h.A = d_dout.data(), h.trans_a = true, h.B = d_inp.data();
  h.C = dw_gpu.data(), h.beta = 1.f;
  runner.gemm(h);
  stream.synchronize();
  CHECK(rel_diff(download(d_dinp), dinp_ref) < kTolBf16);
  CHECK(rel_diff(download(dw_gpu), dw_ref.buf) < kTolGemmF32);

  // The same dW (written: beta = 0) with the bias gradient Σ_rows dout from the epilogue.
  Vec dbias_ref(size_t(OC), 0.0);
  cpu::matmul_bwd((double*)nullptr, (double*)nullptr, dbias_ref.data(), dout.data(), inp.data(), w.data(), Nrows, IC,
                  OC);
  cuda::DeviceBuffer<float> dw2{size_t(OC) * IC}, d_dbias{size_t(OC)};
  h.C = dw2.data(), h.beta = 0.f, h.epilogue = cuda::Epilogue::BiasGradA, h.bias_grad = d_dbias.data();
  runner.gemm(h);
  stream.synchronize();
  CHECK(rel_diff(download(dw2), dw_ref.added()) < kTolGemmF32);
  CHECK(rel_diff(download(d_dbias), dbias_ref) < kTolGemmF32);
}

TEST_CASE("gpu bias gradient matches cpu::matmul_bwd's dbias", "[gpu][gemm]") {
  const uint64_t seed = 915;
  CAPTURE(seed);
  Rng rng(seed);
  // Rows not a multiple of the chunks; 77 columns take the scalar kernel (not a multiple of its
  // 32-column slab), 264 the 16-byte one (a multiple of 8, not of its 256-column block). 20011
  // rows give each thread more rows than one trip of its unrolled loop takes, and a remainder;
  // 1000 fewer than one trip.
  const int OC = GENERATE(77, 264), Nrows = GENERATE(1000, 20011);
  CAPTURE(OC, Nrows);
  const Vec dout = round_bf16(randn(rng, int64_t(Nrows) * OC));
  const Vec inp(size_t(Nrows), 0.0), w(size_t(OC), 0.0);  // IC = 1, only dbias is asked for
  AccumGrad dbias(rng, OC);
  cpu::matmul_bwd((double*)nullptr, (double*)nullptr, dbias.data(), dout.data(), inp.data(), w.data(), Nrows, 1, OC);
  auto d_dout = upload_bf16(dout);
  auto d_dbias = upload_f32(dbias.start);
  cuda::DeviceBuffer<float> scratch(size_t(kernels::bias_bwd_scratch_floats(OC)));
  kernels::bias_bwd(d_dbias.data(), scratch.data(), d_dout.data(), Nrows, OC, nullptr);
  CHECK(rel_diff(download(d_dbias), dbias.buf) < kTolF32);
}

// fp16 and fp32 operands (Newton-Schulz at those precisions) and beta·C_in from a second input,
// strided-batched. fp32 must be true fp32: at K = 512 TF32 (10-bit mantissa) would be off by
// ~1e-3, fp32 by ~1e-7, hence 1e-5. fp16 output rounds once (2^-11): kTolBf16 / 4.
TEST_CASE_METHOD(GemmCase, "gpu gemm: fp16 and fp32 operands, beta from a second input", "[gpu][gemm]") {
  use_seed(917);
  CAPTURE(seed);
  const int batch = 2, M = 24, N = 40, K = 512;
  const int64_t sa = int64_t(M) * K, sb = int64_t(N) * K, sc = int64_t(M) * N;
  for (cuda::InType in : {cuda::InType::F16, cuda::InType::F32}) {
    CAPTURE(int(in));
    Vec A = randn(rng, batch * sa), B = randn(rng, batch * sb);
    const Vec C0 = randn(rng, batch * sc);
    std::vector<__half> hA, hB, hC0;
    if (in == cuda::InType::F16) {  // the reference runs on the fp16 values
      for (auto& x : A) hA.push_back(__float2half_rn(float(x))), x = double(__half2float(hA.back()));
      for (auto& x : B) hB.push_back(__float2half_rn(float(x))), x = double(__half2float(hB.back()));
    }
    auto fA = upload_f32(A), fB = upload_f32(B), fC0 = upload_f32(C0);
    cuda::DeviceBuffer<__half> h16A, h16B, h16C(size_t(batch * sc)), h16C0;
    cuda::DeviceBuffer<float> dC(size_t(batch * sc));
    cuda::GemmArgs g;
    g.M = M, g.N = N, g.K = K, g.trans_b = true, g.in_type = in, g.alpha = 0.5f, g.beta = -1.5f;
    g.batch = batch, g.stride_a = sa, g.stride_b = sb, g.stride_c = sc;
    Vec C0_used = C0;
    if (in == cuda::InType::F16) {
      for (auto& x : C0_used) hC0.push_back(__float2half_rn(float(x))), x = double(__half2float(hC0.back()));
      h16A = upload(hA), h16B = upload(hB), h16C0 = upload(hC0);
      g.A = h16A.data(), g.B = h16B.data(), g.C = h16C.data(), g.C_in = h16C0.data();
      g.out_type = cuda::OutType::F16;
    } else {
      g.A = fA.data(), g.B = fB.data(), g.C = dC.data(), g.C_in = fC0.data();
      g.out_type = cuda::OutType::F32;
    }
    runner.gemm(g);
    stream.synchronize();
    Vec got;
    if (in == cuda::InType::F16) {
      for (const __half& h : h16C.download()) got.push_back(double(__half2float(h)));
    } else {
      got = download(dC);
    }
    for (int b = 0; b < batch; ++b) {
      const Vec ref = ref_gemm(Vec(A.begin() + b * sa, A.begin() + (b + 1) * sa), false,
                               Vec(B.begin() + b * sb, B.begin() + (b + 1) * sb), true,
                               Vec(C0_used.begin() + b * sc, C0_used.begin() + (b + 1) * sc), M, N, K, 0.5, -1.5);
      const Vec part(got.begin() + b * sc, got.begin() + (b + 1) * sc);
      CAPTURE(b);
      CHECK(rel_diff(part, ref) < (in == cuda::InType::F32 ? 1e-5 : kTolBf16 / 4));
    }
    // C_in is read, C only written: the fp32 C_in is unchanged.
    if (in == cuda::InType::F32) CHECK(download(fC0) == to_vec(cast<float>(C0)));
  }
}

// Row strides: C's top-right block of a wider matrix from sub-blocks of A and B (ld > width),
// as Newton-Schulz's X X^T by blocks uses them; the rest of C is left alone.
TEST_CASE_METHOD(GemmCase, "gpu gemm: leading dimensions of sub-blocks", "[gpu][gemm]") {
  use_seed(918);
  CAPTURE(seed);
  const int M = 16, N = 24, K = 40, lda = 56, ldb = 48, ldc = 64;  // A [M, lda], B [N, ldb] (trans_b), C [M, ldc]
  const Vec A = round_bf16(randn(rng, int64_t(M) * lda)), B = round_bf16(randn(rng, int64_t(N) * ldb));
  const Vec C0 = randn(rng, int64_t(M) * ldc);
  auto dA = upload_bf16(A), dB = upload_bf16(B);
  auto dC = upload_f32(C0);
  cuda::GemmArgs g;
  g.M = M, g.N = N, g.K = K, g.trans_b = true, g.lda = lda, g.ldb = ldb, g.ldc = ldc;
  g.A = dA.data() + 8, g.B = dB.data() + 8, g.C = dC.data() + 32, g.out_type = cuda::OutType::F32;  // column offsets
  runner.gemm(g);
  stream.synchronize();
  const Vec got = download(dC);
  Vec want = to_vec(cast<float>(C0));
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double s = 0.0;
      for (int k = 0; k < K; ++k) s += A[size_t(m) * lda + 8 + k] * B[size_t(n) * ldb + 8 + k];
      want[size_t(m) * ldc + 32 + n] = s;
    }
  CHECK(rel_diff(got, want) < 5e-4);
  bool rest_untouched = true;
  for (int m = 0; m < M; ++m)
    for (int c = 0; c < ldc; ++c)
      if (c < 32 || c >= 32 + N) rest_untouched &= got[size_t(m) * ldc + c] == want[size_t(m) * ldc + c];
  CHECK(rest_untouched);
}

// The residual of a branch without a norm after it (CudaGpt, model.norm = none and the lipschitz
// variant): bf16 out = alpha·(inp·W^T) + beta·res with res a second bf16 input (the convex
// residual a/3, 1 - a), and in place (beta·C, C_in null: the gradient dres = keep·dres + dX).
// bf16 output: kTolBf16; the residual input is left unchanged.
TEST_CASE_METHOD(GemmCase,
                 "gpu gemm: bf16 output plus beta times a bf16 residual, separate and in place", "[gpu][gemm]") {
  use_seed(919);
  CAPTURE(seed);
  const int M = 64, N = 96, K = 128;
  const double alpha = 0.25 / 3.0, beta = 0.75;
  const Vec A = round_bf16(randn(rng, int64_t(M) * K)), W = round_bf16(randn(rng, int64_t(N) * K, 0.2));
  const Vec R = round_bf16(randn(rng, int64_t(M) * N));
  const Vec ref = ref_gemm(A, false, W, true, R, M, N, K, alpha, beta);
  auto dA = upload_bf16(A), dW = upload_bf16(W), dR = upload_bf16(R);
  cuda::DeviceBuffer<bf16> dC(size_t(M) * N);
  cuda::GemmArgs g;
  g.M = M, g.N = N, g.K = K, g.A = dA.data(), g.B = dW.data(), g.trans_b = true, g.C = dC.data(), g.C_in = dR.data();
  g.out_type = cuda::OutType::BF16, g.alpha = float(alpha), g.beta = float(beta);
  runner.gemm(g);
  stream.synchronize();
  CHECK(rel_diff(download(dC), ref) < kTolBf16);
  CHECK(download(dR) == R);
  // In place: C starts as R.
  g.C = dR.data(), g.C_in = nullptr;
  runner.gemm(g);
  stream.synchronize();
  CHECK(rel_diff(download(dR), ref) < kTolBf16);
}

TEST_CASE_METHOD(GemmCase,
                 "gpu gemm: autotuning picks among candidates and leaves an accumulated output as one call would",
                 "[gpu][gemm]") {
  use_seed(917);
  CAPTURE(seed);
  runner.set_autotune(true);
  // The trials run on the call's own buffers: C += A^T·B (beta = 1, in place) must come out as
  // one accumulation, the first call (tuning) and the second (cached) alike.
  const int M = 192, N = 256, K = 320;
  const Vec A = round_bf16(randn(rng, int64_t(K) * M)), B = round_bf16(randn(rng, int64_t(K) * N));
  const Vec C0 = randn(rng, int64_t(M) * N);
  auto dA = upload_bf16(A), dB = upload_bf16(B);
  auto dC = upload_f32(C0);
  cuda::GemmArgs g;
  g.M = M, g.N = N, g.K = K, g.A = dA.data(), g.trans_a = true, g.B = dB.data(), g.C = dC.data();
  g.out_type = cuda::OutType::F32, g.beta = 1.f;
  runner.gemm(g);
  stream.synchronize();
  const Vec once = ref_gemm(A, true, B, false, C0, M, N, K, 1.0, 1.0);
  CHECK(rel_diff(download(dC), once) < kTolGemmF32);
  runner.gemm(g);
  stream.synchronize();
  CHECK(rel_diff(download(dC), ref_gemm(A, true, B, false, once, M, N, K, 1.0, 1.0)) < kTolGemmF32);
  CHECK(runner.cached_plans() == 1);
}
