#!/usr/bin/python3
"""Plots of polargpt runs and sweeps, to PNG (matplotlib, Debian's python3-matplotlib).

  scripts/plot.py RUN_DIR [-o loss.png]                    loss curves of one run
  scripts/plot.py SWEEP_DIR [-o loss.png]                  loss curves of every run of a sweep
  scripts/plot.py SWEEP_DIR --tradeoff [-o tradeoff.png]   final val loss against the Lipschitz
        certificate (log10_lipschitz_bound), one line per value of --group (default spectral.method),
        points labelled with --label (default spectral.w_max)

A run directory holds metrics.jsonl; a sweep directory holds sweep.json (written by
`polargpt sweep`) naming its runs and their overrides. Several paths may be given; their runs
are drawn together.
"""
import argparse
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(run_dir):
    recs = []
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return recs
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a torn last line of a run still going
    return recs


def runs_of(path):
    """[(label, run_dir, overrides)] for a run directory or a sweep directory."""
    sweep_file = os.path.join(path, "sweep.json")
    if os.path.exists(sweep_file):
        with open(sweep_file) as f:
            sweep = json.load(f)
        return [(r["name"], os.path.join(path, r["name"]), r.get("overrides", {})) for r in sweep["runs"]]
    if os.path.exists(os.path.join(path, "metrics.jsonl")):
        return [(os.path.basename(os.path.normpath(path)), path, {})]
    sys.exit(f"plot.py: {path}: neither a run directory (metrics.jsonl) nor a sweep directory (sweep.json)")


def series(recs, key):
    pts = [(r["step"], r[key]) for r in recs if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_losses(runs, out, title):
    fig, (ax_t, ax_v) = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn = 0
    for i, (label, run_dir, _) in enumerate(runs):
        recs = read_metrics(run_dir)
        if not recs:
            continue
        c = colors[i % len(colors)]
        xs, ys = series(recs, "train_loss")
        ax_t.plot(xs, ys, color=c, lw=1.2, label=label)
        xs, ys = series(recs, "val_loss")
        ax_v.plot(xs, ys, color=c, lw=1.5, marker="o", ms=4, label=label)
        drawn += 1
    if drawn == 0:
        sys.exit("plot.py: no run has metrics yet")
    ax_t.set_title("train loss")
    ax_v.set_title("val loss")
    for ax in (ax_t, ax_v):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    ax_t.set_ylabel("cross-entropy (nats/token)")
    ax_v.legend(fontsize=8, loc="upper right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def log10_certificate(rec):
    """log10 of the record's Lipschitz bound: a bound past a double's range is logged as null with
    its log10 alone."""
    lg = rec.get("log10_lipschitz_bound")
    if isinstance(lg, (int, float)) and math.isfinite(lg):
        return lg
    b = rec.get("lipschitz_bound")
    if isinstance(b, (int, float)) and b > 0 and math.isfinite(b):
        return math.log10(b)
    return None


def plot_tradeoff(runs, out, title, group_key, label_key):
    groups = {}
    for name, run_dir, overrides in runs:
        recs = read_metrics(run_dir)
        val = [r["val_loss"] for r in recs if isinstance(r.get("val_loss"), (int, float))]
        cert = [log10_certificate(r) for r in recs]
        cert = [c for c in cert if c is not None]
        if not val or not cert:
            continue
        g = str(overrides.get(group_key, "")) if group_key else ""
        groups.setdefault(g, []).append((cert[-1], val[-1], overrides.get(label_key, name)))
    if not groups:
        sys.exit("plot.py --tradeoff: no run has both val_loss and lipschitz_bound in its metrics")
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for g, pts in sorted(groups.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{group_key}={g}" if g else None)
        for cert, val, lab in pts:
            ax.annotate(str(lab), (cert, val), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("log10 of the Lipschitz certificate (log10_lipschitz_bound)")
    ax.set_ylabel("final val loss")
    ax.grid(alpha=0.3)
    if any(groups):
        ax.legend(fontsize=8)
    ax.set_title(title or "val loss vs certificate" + (f" (points: {label_key})" if label_key else ""))
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", help="run or sweep directories")
    ap.add_argument("-o", "--out", help="PNG to write (default: <first path>/loss.png or tradeoff.png)")
    ap.add_argument("--tradeoff", action="store_true", help="val loss against the Lipschitz certificate")
    ap.add_argument("--group", default="spectral.method", help="--tradeoff: one line per value of this key")
    ap.add_argument("--label", default="spectral.w_max", help="--tradeoff: label points with this key")
    ap.add_argument("--title", default="", help="figure title")
    a = ap.parse_args()
    runs = [r for p in a.paths for r in runs_of(p)]
    out = a.out or os.path.join(a.paths[0], "tradeoff.png" if a.tradeoff else "loss.png")
    if a.tradeoff:
        plot_tradeoff(runs, out, a.title, a.group, a.label)
    else:
        plot_losses(runs, out, a.title)
    print(out)


if __name__ == "__main__":
    main()
