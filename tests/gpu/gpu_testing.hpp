// Helpers of the GPU tests: bf16 <-> double on the host, device copies of host vectors, and the
// precision rule every GPU test states its tolerance by.
//
// Tolerances (relative error ‖gpu − ref‖/‖ref‖ against the float64 CPU reference run on the
// same, already bf16-rounded, inputs):
//   kTolF32  = 1e-4  results computed and stored in fp32 (fp32 sums of up to ~10^3 terms)
//   kTolBf16 = 1e-2  results stored in bf16 (one rounding, 2^-9 ≈ 2e-3 relative, plus fp32 math)
//   kTolGemm = 2e-2  bf16 GEMM operands stored from bf16 outputs
#pragma once
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cuda/device.hpp"
#include "backend/ops_testing.hpp"
#include "kernels/types.cuh"
#include "model/param_table.hpp"

namespace pg::test {

constexpr double kTolF32 = 1e-4;
constexpr double kTolBf16 = 1e-2;
constexpr double kTolGemm = 2e-2;

using pg::kernels::bf16;

// Round to nearest even (the hardware's rule); NaN/inf never occur in these tests.
inline bf16 to_bf16(double x) {
  const float f = float(x);
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  __nv_bfloat16_raw raw;
  raw.x = uint16_t(u >> 16);
  return bf16(raw);
}
inline double from_bf16(bf16 b) {
  const uint32_t u = uint32_t(__nv_bfloat16_raw(b).x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline std::vector<bf16> to_bf16(const Vec& v) {
  std::vector<bf16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = to_bf16(v[i]);
  return out;
}
// The values a bf16 array holds, as doubles: the reference runs on exactly what the GPU reads.
inline Vec round_bf16(const Vec& v) {
  Vec out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = from_bf16(to_bf16(v[i]));
  return out;
}
inline Vec to_vec(const std::vector<bf16>& v) {
  Vec out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = from_bf16(v[i]);
  return out;
}
inline Vec to_vec(const std::vector<float>& v) { return Vec(v.begin(), v.end()); }

inline cuda::DeviceBuffer<bf16> upload_bf16(const Vec& v) {
  const auto h = to_bf16(v);
  return cuda::DeviceBuffer<bf16>(std::span<const bf16>(h));
}
inline cuda::DeviceBuffer<float> upload_f32(const Vec& v) {
  const std::vector<float> h(v.begin(), v.end());
  return cuda::DeviceBuffer<float>(std::span<const float>(h));
}
template <typename T>
cuda::DeviceBuffer<T> upload(const std::vector<T>& v) {
  return cuda::DeviceBuffer<T>(std::span<const T>(v));
}
inline Vec download(const cuda::DeviceBuffer<bf16>& b) { return to_vec(b.download()); }
inline Vec download(const cuda::DeviceBuffer<float>& b) { return to_vec(b.download()); }

// Every parameter's gradient of a whole model, GPU (got, fp32) against the float64 CPU reference
// (ref), both laid out by the table: each tensor within 5e-2 relative (bf16 activations through
// the whole network), except tensors whose reference gradient is negligible (below 1e-6 of the
// largest tensor norm), which must stay below 1e-2 of it.
inline void check_every_gradient(const ParamTable& table, const Vec& ref_all, const std::vector<float>& got_all) {
  double max_norm = 0.0;
  for (const auto& p : table.entries()) {
    double n2 = 0.0;
    for (int64_t i = 0; i < p.numel; ++i) n2 += ref_all[size_t(p.offset + i)] * ref_all[size_t(p.offset + i)];
    max_norm = std::max(max_norm, std::sqrt(n2));
  }
  for (const auto& p : table.entries()) {
    const Vec ref(ref_all.begin() + p.offset, ref_all.begin() + p.offset + p.numel);
    const Vec got(got_all.begin() + p.offset, got_all.begin() + p.offset + p.numel);
    double r2 = 0.0, g2 = 0.0;
    for (size_t i = 0; i < ref.size(); ++i) r2 += ref[i] * ref[i], g2 += got[i] * got[i];
    const std::string name = p.name;
    CAPTURE(name, std::sqrt(r2), max_norm);
    if (std::sqrt(r2) < 1e-6 * max_norm) CHECK(std::sqrt(g2) < 1e-2 * max_norm);
    else CHECK(rel_diff(got, ref) < 5e-2);
  }
}

}  // namespace pg::test
