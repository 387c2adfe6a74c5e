// LayerNorm / RMSNorm fused with the residual add, and QK-norm (kernels/norm.cuh), against the
// float64 CPU reference on the GPU's own bf16 inputs. Backward checks start every gradient from
// noise, so accumulation (+=) is checked too. Tolerances: bf16 outputs kTolBf16, fp32 statistics
// and parameter gradients kTolF32.
#include <catch2/catch.hpp>

#include "backend/cpu/ops.hpp"
#include "gpu_testing.hpp"
#include "kernels/norm.cuh"

using namespace pg;
using namespace pg::test;
using kernels::NormKind;

TEST_CASE("gpu residual + LayerNorm / RMSNorm forward and backward", "[gpu][norm]") {
  const uint64_t seed = 921;
  CAPTURE(seed);
  Rng rng(seed);
  // C = 200: not a multiple of 32 or 8 (one element per access, shared-memory sums); 520:
  // 16-byte accesses, not a multiple of a warp's 256 columns (register sums); 768 over 3000 rows:
  // register sums over several rows per warp; 1280: 16-byte accesses beyond the register path.
  const auto [N, C] = GENERATE(std::pair{70, 200}, std::pair{70, 520}, std::pair{3000, 768}, std::pair{70, 1280});
  CAPTURE(N, C);
  const int64_t NC = int64_t(N) * C;
  for (NormKind kind : {NormKind::LayerNorm, NormKind::RMSNorm}) {
    const bool ln = kind == NormKind::LayerNorm;
    CAPTURE(ln);
    const Vec res_in = round_bf16(randn(rng, NC)), branch = round_bf16(randn(rng, NC, 0.5));
    Vec gain = round_bf16(randn(rng, C, 0.2));
    for (auto& g : gain) g = from_bf16(to_bf16(1.0 + g));
    const Vec bias = round_bf16(randn(rng, C, 0.1));
    Vec x(NC);
    for (int64_t i = 0; i < NC; ++i) x[size_t(i)] = from_bf16(to_bf16(res_in[size_t(i)] + branch[size_t(i)]));
    Vec ref(NC), mean(N), rstd(N);
    if (ln) cpu::layernorm_fwd(ref.data(), mean.data(), rstd.data(), x.data(), gain.data(), bias.data(), N, C);
    else cpu::rmsnorm_fwd(ref.data(), rstd.data(), x.data(), gain.data(), N, C, 1e-5);

    auto d_res_in = upload_bf16(res_in), d_branch = upload_bf16(branch), d_gain = upload_bf16(gain),
         d_bias = upload_bf16(bias);
    cuda::DeviceBuffer<bf16> d_res_out(NC), d_out(NC);
    cuda::DeviceBuffer<float> d_mean(N), d_rstd(N);
    kernels::residual_norm_fwd(d_res_out.data(), d_out.data(), ln ? d_mean.data() : nullptr, d_rstd.data(),
                               d_res_in.data(), d_branch.data(), d_gain.data(), ln ? d_bias.data() : nullptr,
                               N, C, 1e-5f, kind, nullptr);
    CHECK(rel_diff(download(d_res_out), x) == 0.0);
    CHECK(rel_diff(download(d_out), ref) < kTolBf16);
    CHECK(rel_diff(download(d_rstd), rstd) < kTolF32);
    if (ln) CHECK(rel_diff(download(d_mean), mean) < kTolF32);

    // Backward: dres += d/dx, dgain += ..., dbias += ..., dsum += Σ_rows dres, all starting from
    // noise.
    const Vec dout = round_bf16(randn(rng, NC));
    AccumGrad dx(rng, NC), dgain(rng, C), dbias(rng, C), dsum(rng, C);
    dx.start = round_bf16(dx.start), dx.buf = dx.start;
    auto d_dx = upload_bf16(dx.start);
    auto d_dgain = upload_f32(dgain.start), d_dbias = upload_f32(dbias.start), d_dsum = upload_f32(dsum.start);
    if (ln) cpu::layernorm_bwd(dx.data(), dgain.data(), dbias.data(), dout.data(), x.data(), gain.data(),
                               mean.data(), rstd.data(), N, C);
    else cpu::rmsnorm_bwd(dx.data(), dgain.data(), dout.data(), x.data(), gain.data(), rstd.data(), N, C);
    auto d_dout = upload_bf16(dout);
    cuda::DeviceBuffer<float> scratch(size_t(kernels::norm_bwd_scratch_floats(C)));
    kernels::norm_bwd(d_dx.data(), true, d_dgain.data(), ln ? d_dbias.data() : nullptr, d_dsum.data(), scratch.data(),
                      d_dout.data(), d_res_out.data(), d_gain.data(), ln ? d_mean.data() : nullptr,
                      d_rstd.data(), N, C, kind, nullptr);
    CHECK(rel_diff(download(d_dx), dx.buf) < kTolBf16);
    // The added part alone, so the noise it started from does not hide an error.
    Vec added = download(d_dx);
    for (size_t i = 0; i < added.size(); ++i) added[i] -= dx.start[i];
    CHECK(rel_diff(added, dx.added()) < 3 * kTolBf16);
    CHECK(rel_diff(download(d_dgain), dgain.buf) < kTolF32);
    if (ln) CHECK(rel_diff(download(d_dbias), dbias.buf) < kTolF32);
    // dsum: the column sums of the bf16 dres the call left, exactly up to fp32 summation; and
    // against the reference's dres, whose sums differ by the bf16 rounding of each element.
    const Vec dx_gpu = download(d_dx);
    Vec sum_gpu = dsum.start, sum_ref = dsum.start;
    for (int64_t r = 0; r < N; ++r)
      for (int c = 0; c < C; ++c) {
        sum_gpu[size_t(c)] += dx_gpu[size_t(r * C + c)];
        sum_ref[size_t(c)] += dx.buf[size_t(r * C + c)];
      }
    const Vec dsum_gpu = download(d_dsum);
    CHECK(rel_diff(dsum_gpu, sum_gpu) < kTolF32);
    CHECK(rel_diff(dsum_gpu, sum_ref) < kTolBf16);
  }
}

TEST_CASE("gpu QK-norm: RMSNorm without gain over each head, in place backward", "[gpu][norm]") {
  const uint64_t seed = 922;
  CAPTURE(seed);
  Rng rng(seed);
  const int rows = 3 * 16 * 4, hs = 64;  // B·Tn·NH rows of hs
  const int64_t n = int64_t(rows) * hs;
  const Vec q = round_bf16(randn(rng, n, 3.0));
  Vec ref(n), rstd(rows);
  cpu::rmsnorm_fwd(ref.data(), rstd.data(), q.data(), (const double*)nullptr, rows, hs, 1e-6);
  auto d_q = upload_bf16(q);
  cuda::DeviceBuffer<bf16> d_out(n);
  cuda::DeviceBuffer<float> d_rstd(rows);
  kernels::residual_norm_fwd(nullptr, d_out.data(), nullptr, d_rstd.data(), d_q.data(), nullptr, nullptr,
                             nullptr, rows, hs, 1e-6f, NormKind::RMSNorm, nullptr);
  CHECK(rel_diff(download(d_out), ref) < kTolBf16);
  CHECK(rel_diff(download(d_rstd), rstd) < kTolF32);

  const Vec dout = round_bf16(randn(rng, n));
  Vec dq(n, 0.0);
  cpu::rmsnorm_bwd(dq.data(), (double*)nullptr, dout.data(), q.data(), (const double*)nullptr, rstd.data(), rows, hs);
  auto d_g = upload_bf16(dout);
  kernels::norm_bwd(d_g.data(), false, nullptr, nullptr, nullptr, nullptr, d_g.data(), d_q.data(), nullptr, nullptr,
                    d_rstd.data(), rows, hs, NormKind::RMSNorm, nullptr);
  CHECK(rel_diff(download(d_g), dq) < kTolBf16);
}
