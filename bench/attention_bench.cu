// Times the causal flash-attention kernels (kernels/attention.cu) on GPT-2-sized shapes.
//   usage: attention_bench [B NH T hs]...   (default: 64 12 1024 64, 64 6 1024 128, 16 12 1024 64)
// For each shape: median over 30 timed repetitions (after 5 warm-ups, CUDA events) of the forward
// and of forward + backward, with inputs random in [-2, 2) (never zeros). FLOPs counted as
// FlashAttention does: forward 4·B·NH·T²·hs / 2 (the causal half of two T×T×hs products),
// backward 2.5× the forward (five products instead of two).
// Prints one line per shape: "ours B NH T hs fwd_ms fwd_tflops fwdbwd_ms fwdbwd_tflops
// fwdbwd_mmasync_ms fwd_pipe_ms": the default kernels, then forward + backward with the mma.sync
// backward (AttentionBwdKernel::MmaSync) and the forward alone with the pipelined kernel
// (AttentionFwdKernel::WgmmaPipe: hs = 128's default anyway, for hs = 32 the default).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "backend/cuda/device.hpp"
#include "kernels/attention.cuh"

namespace {

using pg::cuda::DeviceBuffer;
using pg::kernels::bf16;

__global__ void fill_random(bf16* x, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;  // integer hash -> uniform [-2, 2)
    h ^= h >> 16;
    h *= 0x7feb352du;
    h ^= h >> 15;
    h *= 0x846ca68bu;
    h ^= h >> 16;
    x[i] = __float2bfloat16(float(h) * (4.f / 4294967296.f) - 2.f);
  }
}

template <typename F>
float median_ms(F&& f, cudaStream_t s) {
  for (int i = 0; i < 5; ++i) f();
  pg::cuda::Event a, b;
  std::vector<float> ms;
  for (int i = 0; i < 30; ++i) {
    a.record(s);
    f();
    b.record(s);
    b.synchronize();
    ms.push_back(b.elapsed_ms_since(a));
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

void bench(int B, int NH, int T, int hs) {
  const size_t n = size_t(B) * T * NH * hs;
  DeviceBuffer<bf16> q(n), k(n), v(n), out(n), dout(n), dq(n), dk(n), dv(n);
  DeviceBuffer<float> lse(size_t(B) * NH * T);
  const pg::kernels::AttentionDims dims{B, T, NH, hs, 0, 0, 0.f};
  DeviceBuffer<unsigned char> ws(pg::kernels::attention_bwd_workspace_bytes(dims));
  uint32_t seed = 1;
  for (auto* b : {&q, &k, &v, &dout}) fill_random<<<1024, 256>>>(b->data(), n, seed++);
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cudaDeviceSynchronize());
  cudaStream_t s = nullptr;
  auto fwd = [&] {
    pg::kernels::attention_fwd(out.data(), lse.data(), q.data(), k.data(), v.data(), dims, s);
  };
  auto fwd_bwd = [&](pg::kernels::AttentionBwdKernel kernel) {
    fwd();
    pg::kernels::attention_bwd(dq.data(), dk.data(), dv.data(), ws.data(), dout.data(),
                               out.data(), lse.data(), q.data(), k.data(), v.data(), dims, s, kernel);
  };
  const float t_fwd = median_ms(fwd, s);
  auto fwd_with = [&](pg::kernels::AttentionFwdKernel kernel) {
    return median_ms([&] { pg::kernels::attention_fwd(out.data(), lse.data(), q.data(), k.data(), v.data(), dims, s, kernel); },
                     s);
  };
  const float t_pipe = fwd_with(pg::kernels::AttentionFwdKernel::WgmmaPipe);
  const float t_all = median_ms([&] { fwd_bwd(pg::kernels::AttentionBwdKernel::Best); }, s);
  const float t_mma = median_ms([&] { fwd_bwd(pg::kernels::AttentionBwdKernel::MmaSync); }, s);
  CUDA_CHECK(cudaDeviceSynchronize());
  const double flop_fwd = 4.0 * B * NH * double(T) * T * hs / 2.0;
  std::printf("ours B=%d NH=%d T=%d hs=%d fwd_ms=%.4f fwd_tflops=%.1f fwdbwd_ms=%.4f "
              "fwdbwd_tflops=%.1f fwdbwd_mmasync_ms=%.4f fwd_pipe_ms=%.4f\n",
              B, NH, T, hs, t_fwd, flop_fwd / (t_fwd * 1e9), t_all, 3.5 * flop_fwd / (t_all * 1e9), t_mma, t_pipe);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> shapes = {64, 12, 1024, 64, 64, 6, 1024, 128, 16, 12, 1024, 64};
  if (argc > 1) {
    shapes.clear();
    for (int i = 1; i < argc; ++i) shapes.push_back(std::atoi(argv[i]));
  }
  for (size_t i = 0; i + 3 < shapes.size(); i += 4)
    bench(shapes[i], shapes[i + 1], shapes[i + 2], shapes[i + 3]);
  return 0;
}
