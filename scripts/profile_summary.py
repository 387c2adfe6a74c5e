#!/usr/bin/env python3
"""Sums an ncu --csv run of gpu__time_duration by kernel name and by group.

usage: profile_summary.py NCU_CSV
Prints the total, each group's time and share, and the 40 costliest kernel names with their
call counts and mean durations.
"""
import csv
import io
import sys
from collections import defaultdict

GROUPS = [  # first match wins: (group, substrings of the kernel name)
    # cuBLASLt's kernels first: their names carry their epilogues (bias, dgelu) too.
    ("gemm", ["nvjet", "sm90_xmma", "cutlass", "splitKreduce", "gemm"]),
    ("attention backward", ["attention_bwd", "attn_bwd", "flash_bwd"]),
    ("attention forward", ["attention_fwd", "attn_fwd", "flash_fwd"]),
    ("norm backward", ["norm_bwd", "norm_param"]),
    ("norm forward", ["norm_fwd"]),
    ("classifier + loss", ["classifier", "loss_sums"]),
    ("bias gradient", ["bias_partial", "bias_reduce", "bias_accumulate", "bgrad"]),
    ("adamw", ["adamw"]),
    ("embedding", ["embedding"]),
]


def group_of(name):
    low = name.lower()
    for g, keys in GROUPS:
        if any(k.lower() in low for k in keys):
            return g
    return "other"


def main():
    text = open(sys.argv[1]).read()
    start = text.find('"ID"')
    rows = csv.DictReader(io.StringIO(text[start:]))
    per_name = defaultdict(lambda: [0, 0.0])
    for r in rows:
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        name = r["Kernel Name"]
        ns = float(r["Metric Value"].replace(",", ""))
        per_name[name][0] += 1
        per_name[name][1] += ns * 1e-6
    total = sum(v[1] for v in per_name.values())
    groups = defaultdict(float)
    for n, (_, ms) in per_name.items():
        groups[group_of(n)] += ms
    print(f"kernels: {sum(v[0] for v in per_name.values())}, total {total:.2f} ms")
    for g, ms in sorted(groups.items(), key=lambda x: -x[1]):
        print(f"  {g:22s} {ms:8.2f} ms {100 * ms / total:5.1f}%")
    print("top kernels (ms total, calls, mean us):")
    for n, (c, ms) in sorted(per_name.items(), key=lambda x: -x[1][1])[:40]:
        print(f"  {ms:8.3f} {c:4d} {1000 * ms / c:9.1f}  {n[:150]}")


if __name__ == "__main__":
    main()
