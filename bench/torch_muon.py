"""One Muon step in PyTorch (bf16 Newton-Schulz, keller5, 5 steps), timed like bench/muon_bench.cpp.

usage: python3 bench/torch_muon.py [NAME=RxC:count,...]...
  default sets: gpt2 (GPT-2 124M's 48 hidden matrices) and moe-issue (256 x 1280x512 + 24 x 512x512);
  scripts/bench_muon.sh passes the shape lines muon_bench prints, so both sides time the same set.
Per set, median of 20 timed runs after 3 warm-ups (CUDA events), printing one line:
  ns_batched_ms     NS only, the matrices of one shape stacked as one [G, R, C] tensor, batched
                    matmuls (torch.compile, dynamic=True)
  ns_per_matrix_ms  NS only, one matrix at a time (torch.compile of the same function on [R, C])
  step_ms           the whole step batched by shape (torch.compile): momentum, Nesterov, NS,
                    decoupled decay, update, bf16 copy of the weights
The NS is the usual Muon implementation: X = G / (||G|| + eps) in bf16, transposed when tall,
X <- aX + (bA + cA^2)X with A = X X^T. The parameters of a shape live in one [G, R, C] tensor from
the start (no stacking copy is timed). TORCH_MUON_COMPILE=0 runs eagerly.
"""
import os
import sys

import torch

A, B, C = 3.4445, -4.7750, 2.0315
STEPS = 5


def newton_schulz(G):
    """msign(G) for G of shape [..., R, C] by 5 keller5 steps in bf16."""
    X = G.bfloat16()
    tall = G.size(-2) > G.size(-1)
    if tall:
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(STEPS):
        Am = X @ X.mT
        Bm = B * Am + C * (Am @ Am)
        X = A * X + Bm @ X
    if tall:
        X = X.mT
    return X


def muon_step(p, p_bf16, g, buf, step, lr: float, wd: float, mu: float):
    buf.lerp_(g, 1 - mu)          # B <- mu B + (1 - mu) g
    d = g.lerp(buf, mu)           # Nesterov: (1 - mu) g + mu B
    o = newton_schulz(d)
    p.mul_(1 - lr * wd).sub_(step * o.float())   # step = lr * scale, a 0-d tensor: no recompile per shape
    p_bf16.copy_(p)


def median_ms(fn, warmup=3, reps=20):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def parse(spec):
    out = []
    for item in spec.split(","):
        shape, count = item.split(":")
        r, c = shape.split("x")
        out.append((int(r), int(c), int(count)))
    return out


def bench(name, shapes, compile_):
    # dynamic=True: one graph per function and orientation instead of one per shape (compile time)
    wrap = (lambda f: torch.compile(f, dynamic=True)) if compile_ else (lambda f: f)
    ns = wrap(newton_schulz)
    step = wrap(muon_step)
    gen = torch.Generator(device="cuda").manual_seed(0)
    groups = []
    for r, c, n in shapes:
        p = torch.rand(n, r, c, device="cuda", generator=gen) * 0.04 - 0.02
        groups.append(dict(p=p, p_bf16=p.bfloat16(), g=torch.rand(n, r, c, device="cuda", generator=gen) * 2 - 1,
                           buf=torch.zeros(n, r, c, device="cuda"),
                           step=torch.tensor(0.02 * max(1.0, r / c) ** 0.5, device="cuda")))
    n_mat = sum(n for _, _, n in shapes)

    def ns_batched():
        for x in groups:
            ns(x["g"])

    def ns_single():
        for x in groups:
            for i in range(x["g"].size(0)):
                ns(x["g"][i])

    def full_step():
        for x in groups:
            step(x["p"], x["p_bf16"], x["g"], x["buf"], x["step"], 0.02, 0.1, 0.95)

    t_batched = median_ms(ns_batched)
    t_single = median_ms(ns_single, warmup=2, reps=5) if n_mat <= 400 else float("nan")
    t_step = median_ms(full_step)
    print(f"torch set={name} matrices={n_mat} compile={int(compile_)} ns_batched_ms={t_batched:.3f} "
          f"ns_per_matrix_ms={t_single:.3f} step_ms={t_step:.3f}", flush=True)


def main():
    torch._dynamo.config.cache_size_limit = 64  # one graph per shape and update scale, never eager fallback
    sets = {"gpt2": "2304x768:12,768x768:12,3072x768:12,768x3072:12",
            "moe-issue": "1280x512:256,512x512:24"}
    if len(sys.argv) > 1:
        sets = dict(a.split("=", 1) for a in sys.argv[1:])
    compile_ = os.environ.get("TORCH_MUON_COMPILE", "1") != "0"
    print(f"torch_muon on {torch.cuda.get_device_name()} (torch {torch.__version__}, keller5, 5 steps, bf16)",
          flush=True)
    for name, spec in sets.items():
        bench(name, parse(spec), compile_)


if __name__ == "__main__":
    main()
