"""The PyTorch baseline of scripts/bench_gpt2.sh: one GPT-2 124M training step in PyTorch.

usage: python3 bench/torch_gpt2.py [B] [steps] [warmup]      (defaults 64 50 10)

The same model as build-gpu/gpt_step_bench (llm.c's configuration): 12 layers, 12 heads,
d_model 768, learned positions, LayerNorm, tanh GELU, biases, embeddings tied to the LM head,
vocab 50304, T = 1024; fp32 master weights, bf16 autocast, scaled_dot_product_attention
(causal), torch.compile, fused AdamW (lr 1e-4, weight decay 0, as the C++ benchmark), uniform
random tokens. Each step: zero grads, forward, backward, optimizer step; the median of `steps`
timed steps (CUDA events, synchronised each step) after `warmup` steps (compilation happens there).
FLOPs per token: 6*n_params + 12*n_layer*d_model*T (the PaLM/llm.c count: every parameter in one
multiply-add forward and two backward, plus attention's scores and mix, causal mask ignored).
Prints one line: torch B= T= ms= tokens_s= tflops= mfu= peak_alloc_gib= device_used_gib=
"""
import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

PEAK_TFLOPS = 989.0  # H100 SXM dense bf16
L, NH, C, V, T = 12, 12, 768, 50304, 1024


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(C)
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C)
        self.c_fc = nn.Linear(C, 4 * C)
        self.mlp_proj = nn.Linear(4 * C, C)

    def forward(self, x):
        B, Tn, _ = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, Tn, NH, C // NH).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(B, Tn, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(T, C)
        self.blocks = nn.ModuleList(Block() for _ in range(L))
        self.ln_f = nn.LayerNorm(C)
        self.lm_head = nn.Linear(C, V, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * L) if name.endswith(("c_proj.weight", "mlp_proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for b in self.blocks:
            x = b(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, V).float(), targets.view(-1))


def main():
    B = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    warmup = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    dev = "cuda"
    model = GPT().to(dev)
    n_params = sum(p.numel() for p in model.parameters())  # the tied matrix once
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, fused=True)
    cmodel = torch.compile(model)
    x = torch.randint(0, 50257, (B, T), device=dev)
    y = torch.randint(0, 50257, (B, T), device=dev)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            loss = cmodel(x, y)
        loss.backward()
        opt.step()
        return loss

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        loss = step()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    ms = times[len(times) // 2]
    tok_s = B * T / (ms * 1e-3)
    flops_tok = 6 * n_params + 12 * L * C * T
    tflops = flops_tok * tok_s / 1e12
    free, total = torch.cuda.mem_get_info()
    print(f"torch {torch.__version__} {torch.cuda.get_device_name()} params={n_params} loss={loss.item():.4f}")
    print(f"torch B={B} T={T} ms={ms:.2f} tokens_s={tok_s:.0f} tflops={tflops:.1f} mfu={tflops / PEAK_TFLOPS:.3f} "
          f"peak_alloc_gib={torch.cuda.max_memory_allocated() / 2**30:.2f} "
          f"device_used_gib={(total - free) / 2**30:.2f}")


if __name__ == "__main__":
    main()
