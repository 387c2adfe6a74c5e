#!/usr/bin/env python3
"""Where a kernel's warps wait, from Nsight Compute's source page of one kernel in SASS:

    ncu -i REPORT.ncu-rep --page source --csv --print-source sass > sass.csv
    scripts/ncu_stalls.py sass.csv [top=15]

Prints the stall samples by reason (share of all samples), then the `top` instructions with the
most samples, each with its dominant reasons and the instruction before it (a stall on a
scoreboard is usually charged to the first instruction that reads the late result)."""
import csv
import sys


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: ncu_stalls.py SASS_CSV [top=15]", file=sys.stderr)
        return 2
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    try:
        rows = list(csv.reader(open(sys.argv[1], newline="")))
    except OSError as e:
        print(f"ncu_stalls.py: {sys.argv[1]}: {e.strerror}", file=sys.stderr)
        return 1
    # The first line names the kernel; the header is the first row with a "Source" column.
    head = next((i for i, r in enumerate(rows) if "Source" in r), None)
    if head is None:
        print(f"ncu_stalls.py: {sys.argv[1]}: no 'Source' column (expected ncu --page source --csv)",
              file=sys.stderr)
        return 1
    hdr, data = rows[head], [r for r in rows[head + 1:] if len(r) == len(rows[head])]
    src = hdr.index("Source")
    reasons = [c for c in hdr if c.startswith("stall_") and not c.endswith("(Not Issued)")]
    if not reasons or not data:
        print(f"ncu_stalls.py: {sys.argv[1]}: no stall columns or no instructions", file=sys.stderr)
        return 1
    col = {c: hdr.index(c) for c in reasons}

    def num(r, c):
        v = r[col[c]].replace(",", "")
        return int(v) if v.strip().isdigit() else 0

    totals = {c: sum(num(r, c) for r in data) for c in reasons}
    total = sum(totals.values())
    if rows[0] and rows[0][0] == "Kernel Name" and len(rows[0]) > 1:
        print(rows[0][1][:120])
    print(f"{len(data)} instructions, {total} stall samples")
    for c, v in sorted(totals.items(), key=lambda kv: -kv[1]):
        if v:
            print(f"  {c[len('stall_'):]:20s} {v:8d} {100.0 * v / max(total, 1):5.1f}%")
    print(f"top {top} instructions by samples:")
    per = [(sum(num(r, c) for c in reasons), i) for i, r in enumerate(data)]
    for n, i in sorted(per, reverse=True)[:top]:
        r = data[i]
        why = sorted(((num(r, c), c[len('stall_'):]) for c in reasons), reverse=True)[:2]
        prev = data[i - 1][src].strip() if i > 0 else ""
        print(f"  {i:5d} {n:7d}  {r[src].strip()[:56]:56s}  {', '.join(f'{w} {k}' for k, w in why if k)}"
              f"  | after: {prev[:40]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
