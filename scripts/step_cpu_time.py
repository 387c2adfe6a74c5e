#!/usr/bin/env python3
"""CPU time of one training step of a config, at train.threads=1, on a machine shared with other work.

Runs `polargpt train` for N steps (log_every 1, one val batch, no intermediate checkpoints) and reads
the process's user + system CPU time (/proc/PID/stat) each time a step's metrics line appears; the
per-step differences after the first step are reported as their median and minimum. CPU time,
unlike wall time, does not count the time spent waiting for a core, so shapes can be compared on a
busy machine (other load still slows a step through the shared caches and memory: compare runs made
at the same time, and quote the median).

    scripts/step_cpu_time.py LABEL N [--bin build/polargpt] [--config configs/tiny.json] [--set k=v]...
    OPENBLAS_CORETYPE=SKYLAKEX scripts/step_cpu_time.py "L6 C96" 10 --set model.n_layer=6
"""
import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("label")
    ap.add_argument("steps", type=int)
    ap.add_argument("--bin", default="build/polargpt")
    ap.add_argument("--config", default="configs/tiny.json")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args()
    if a.steps < 3:
        ap.error("steps: expected at least 3 (the first step is not counted)")
    out = tempfile.mkdtemp(prefix="step_cpu_time_")
    sets = ["train.threads=1", "train.eval_batches=1", "train.eval_every=0", "train.log_every=1",
            "train.checkpoint_every=0", f"train.max_steps={a.steps}", *a.set]
    cmd = [a.bin, "train", "--config", a.config, "--device", "cpu", "--out", os.path.join(out, "run")]
    for s in sets:
        cmd += ["--set", s]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tick = os.sysconf("SC_CLK_TCK")
    metrics = os.path.join(out, "run", "metrics.jsonl")

    def cpu_s():
        try:
            with open(f"/proc/{p.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            return None

    seen, marks = 0, []
    while p.poll() is None:
        try:
            with open(metrics) as f:
                n = sum(1 for _ in f)
        except FileNotFoundError:
            n = 0
        if n > seen:
            c = cpu_s()
            if c is not None:
                marks.append((n, c))
            seen = n
        time.sleep(0.01)
    err = p.stderr.read().decode(errors="replace")
    shutil.rmtree(out, ignore_errors=True)
    if p.returncode != 0:
        raise SystemExit(f"step_cpu_time: polargpt train exited with {p.returncode}: {err.strip()[-500:]}")
    steps = [(b[1] - a_[1]) / (b[0] - a_[0]) for a_, b in zip(marks, marks[1:])][1:]
    if not steps:
        raise SystemExit("step_cpu_time: too few steps were seen; use more steps")
    print(f"{a.label} | median {statistics.median(steps):.3f} s | min {min(steps):.3f} s | {len(steps)} steps | "
          + " ".join(f"{s:.2f}" for s in steps), flush=True)


if __name__ == "__main__":
    main()
