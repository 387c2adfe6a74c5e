"""PyTorch's causal scaled_dot_product_attention in bf16, timed like bench/attention_bench.cu.

usage: python3 bench/torch_attention.py [B NH T hs]...   (same defaults and output format)
q, k, v are [B, T, NH, hs] tensors viewed as [B, NH, T, hs] (as a GPT's attention calls it);
inputs uniform in [-2, 2); median of 30 timed repetitions after 5 warm-ups (CUDA events);
FLOPs counted as FlashAttention does (forward 4*B*NH*T^2*hs/2, backward 2.5x the forward).
"""
import sys

import torch
import torch.nn.functional as F


def median_ms(fn):
    for _ in range(5):
        fn()
    times = []
    for _ in range(30):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def bench(B, NH, T, hs):
    def rand(requires_grad):
        x = torch.rand(B, T, NH, hs, device="cuda", dtype=torch.bfloat16) * 4 - 2
        return x.requires_grad_(requires_grad)

    q, k, v = rand(True), rand(True), rand(True)
    dout = rand(False).transpose(1, 2)

    def fwd():
        with torch.no_grad():
            F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           is_causal=True)

    def fwd_bwd():
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                             v.transpose(1, 2), is_causal=True)
        torch.autograd.grad(out, (q, k, v), dout)

    t_fwd, t_all = median_ms(fwd), median_ms(fwd_bwd)
    flop_fwd = 4.0 * B * NH * T * T * hs / 2.0
    print(f"sdpa B={B} NH={NH} T={T} hs={hs} fwd_ms={t_fwd:.4f} "
          f"fwd_tflops={flop_fwd / (t_fwd * 1e9):.1f} fwdbwd_ms={t_all:.4f} "
          f"fwdbwd_tflops={3.5 * flop_fwd / (t_all * 1e9):.1f}", flush=True)


def main():
    shapes = [64, 12, 1024, 64, 64, 6, 1024, 128, 16, 12, 1024, 64]
    if len(sys.argv) > 1:
        shapes = [int(a) for a in sys.argv[1:]]
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}", flush=True)
    for i in range(0, len(shapes) - 3, 4):
        bench(*shapes[i:i + 4])


if __name__ == "__main__":
    main()
