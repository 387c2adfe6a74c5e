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

// Uniform in [-scale, scale), bf16-representable: cheaper than randn for the large cases below.
namespace {
Vec uniform_bf16(Rng& rng, int64_t n, double scale) {
  Vec v(static_cast<size_t>(n));
  for (auto& x : v) x = rng.uniform(-scale, scale);
  return round_bf16(v);
}
}  // namespace

// The backward's paths by row width and arguments: C = 256 (the group kernel with one warp per
// row), 520 (three warps, the last one partly idle), 768 (GPT-2's width), 1024 (four warps);
// accumulated (the blocks' norms, with dsum) or written (the final norm, with dsum; or no
// parameter sums at all). At C = 768 the rows outnumber the grid's row groups ~16 times, so
// every group cycles its row ring (5 stages) three times. dinp starts from noise, which only the
// accumulated case may read. Both kernels (NormBwdKernel): WarpRing takes C = 256, 520 and 768 (a
// warp a row: 520 leaves lanes idle in its third chunk) and leaves 1024 to the group kernel.
TEST_CASE("gpu norm backward paths: accumulate or not, with or without parameter sums", "[gpu][norm]") {
  const uint64_t seed = 923;
  const auto which = GENERATE(kernels::NormBwdKernel::Group, kernels::NormBwdKernel::WarpRing);
  CAPTURE(seed, int(which));
  Rng rng(seed);
  const std::pair<int, int> shapes[] = {{4000, 256}, {3000, 520}, {16384, 768}, {3000, 1024}};
  for (const auto& [N, C] : shapes) {
    for (int mode = 0; mode < 3; ++mode) {
      const bool accumulate = mode == 0, param = mode < 2;
      const NormKind kind = C == 520 && mode == 1 ? NormKind::RMSNorm : NormKind::LayerNorm;
      const bool ln = kind == NormKind::LayerNorm;
      CAPTURE(N, C, accumulate, param, ln);
      const int64_t NC = int64_t(N) * C;
      Vec x = uniform_bf16(rng, NC, 3.0);
      for (int64_t r = 0; r < N; ++r)  // a per-row offset, so that the mean matters
        for (int c = 0; c < C; ++c) {
          double& v = x[size_t(r * C + c)];
          v = from_bf16(to_bf16(v + 0.05 * double(r % 97)));
        }
      Vec gain = round_bf16(randn(rng, C, 0.2));
      for (auto& g : gain) g = from_bf16(to_bf16(1.0 + g));
      Vec fwd(NC), mean(N), rstd(N);
      if (ln) cpu::layernorm_fwd(fwd.data(), mean.data(), rstd.data(), x.data(), gain.data(), nullptr, N, C);
      else cpu::rmsnorm_fwd(fwd.data(), rstd.data(), x.data(), gain.data(), N, C, 1e-5);
      const Vec dout = uniform_bf16(rng, NC, 1.0);
      const Vec dx0 = uniform_bf16(rng, NC, 1.0);
      Vec dx = accumulate ? dx0 : Vec(size_t(NC), 0.0);
      AccumGrad dgain(rng, C), dbias(rng, C), dsum(rng, C);
      if (ln) cpu::layernorm_bwd(dx.data(), dgain.data(), dbias.data(), dout.data(), x.data(), gain.data(),
                                 mean.data(), rstd.data(), N, C);
      else cpu::rmsnorm_bwd(dx.data(), dgain.data(), dout.data(), x.data(), gain.data(), rstd.data(), N, C);

      auto d_x = upload_bf16(x), d_gain = upload_bf16(gain), d_dout = upload_bf16(dout), d_dx = upload_bf16(dx0);
      auto d_mean = upload_f32(mean), d_rstd = upload_f32(rstd);
      auto d_dgain = upload_f32(dgain.start), d_dbias = upload_f32(dbias.start), d_dsum = upload_f32(dsum.start);
      cuda::DeviceBuffer<float> scratch(size_t(kernels::norm_bwd_scratch_floats(C)));
      kernels::norm_bwd(d_dx.data(), accumulate, param ? d_dgain.data() : nullptr,
                        param && ln ? d_dbias.data() : nullptr, param ? d_dsum.data() : nullptr,
                        param ? scratch.data() : nullptr, d_dout.data(), d_x.data(), d_gain.data(),
                        ln ? d_mean.data() : nullptr, d_rstd.data(), N, C, kind, nullptr, which);
      const Vec dx_gpu = download(d_dx);
      CHECK(rel_diff(dx_gpu, dx) < kTolBf16);
      if (accumulate) {
        Vec added = dx_gpu, added_ref = dx;
        for (size_t i = 0; i < added.size(); ++i) added[i] -= dx0[i], added_ref[i] -= dx0[i];
        CHECK(rel_diff(added, added_ref) < 3 * kTolBf16);
      }
      if (!param) continue;
      CHECK(rel_diff(download(d_dgain), dgain.buf) < kTolF32);
      if (ln) CHECK(rel_diff(download(d_dbias), dbias.buf) < kTolF32);
      Vec sum_gpu = dsum.start;
      for (int64_t r = 0; r < N; ++r)
        for (int c = 0; c < C; ++c) sum_gpu[size_t(c)] += dx_gpu[size_t(r * C + c)];
      CHECK(rel_diff(download(d_dsum), sum_gpu) < kTolF32);
    }
  }
}

TEST_CASE("gpu norm backward is deterministic: the same bits on a second run", "[gpu][norm]") {
  const uint64_t seed = 924;
  const auto which = GENERATE(kernels::NormBwdKernel::Group, kernels::NormBwdKernel::WarpRing);
  CAPTURE(seed, int(which));
  Rng rng(seed);
  const int N = 8000, C = 768;  // ~8 rows per row group: the ring wraps
  const int64_t NC = int64_t(N) * C;
  auto d_x = upload_bf16(uniform_bf16(rng, NC, 2.0)), d_dout = upload_bf16(uniform_bf16(rng, NC, 1.0));
  auto d_gain = upload_bf16(randn(rng, C));
  auto d_mean = upload_f32(randn(rng, N, 0.1)), d_rstd = upload_f32(Vec(size_t(N), 1.3));
  const Vec dx0 = uniform_bf16(rng, NC, 1.0);
  std::vector<float> first[4];
  for (int run = 0; run < 2; ++run) {
    auto d_dx = upload_bf16(dx0);
    const auto n_col = static_cast<size_t>(C);
    cuda::DeviceBuffer<float> dgain(n_col), dbias(n_col), dsum(n_col);
    dgain.zero(), dbias.zero(), dsum.zero();
    cuda::DeviceBuffer<float> scratch(size_t(kernels::norm_bwd_scratch_floats(C)));
    kernels::norm_bwd(d_dx.data(), true, dgain.data(), dbias.data(), dsum.data(), scratch.data(), d_dout.data(),
                      d_x.data(), d_gain.data(), d_mean.data(), d_rstd.data(), N, C, NormKind::LayerNorm, nullptr,
                      which);
    std::vector<float> got[4] = {dgain.download(), dbias.download(), dsum.download(), {}};
    for (bf16 v : d_dx.download()) got[3].push_back(float(from_bf16(v)));
    for (int i = 0; i < 4; ++i) {
      if (run == 0) first[i] = got[i];
      else CHECK(got[i] == first[i]);
    }
  }
}
