#!/usr/bin/env bash
# Data-parallel scaling of GPT-2 124M with Muon on the GPUs of one machine, every run through
# scripts/launch.sh and `polargpt train --device cuda` on the bundled corpus:
#
#   1. scaling: 1, 2, 4, 8 GPUs (those present), the same global batch of 512K tokens per step
#      (B = 64 x 1024 per micro-batch, grad_accum = 8 / N): tokens/s, per GPU, efficiency against
#      1 GPU, device memory per GPU, and the first losses against the 1-GPU run's (to bf16
#      tolerance: the global batch and its order do not depend on the world size);
#   2. communication: 1 GPU and the largest N with one micro-batch per step (grad_accum 1, so each
#      GPU does the same work): the step time added at N is the exposed communication; where nsys
#      is installed, the NCCL kernels' total time per step at N (overlapped = total - exposed);
#   3. ZeRO-1 on at the largest N against its scaling run (off): device memory per GPU (the
#      planned figure) and tokens/s;
#   4. a simulated two-node launch: two launch.sh invocations with --nnodes 2, node ranks 0 and 1,
#      the same master address and port, each on its own half of the GPUs, for a few steps;
#   5. a rank killed mid-run (SIGKILL to rank 1 after step KILL_AT): the launcher stops the job with
#      that rank's code; `--resume` from the last checkpoint reproduces the uninterrupted run's
#      later losses (the largest-N scaling run) to bf16 tolerance.
#
# Steps 2-5 need at least 2 GPUs. Logs and scaling_summary.md go to $OUT when set (else
# $BUILD_DIR/logs). Exits non-zero when a run fails or a check does not hold.
#   usage: scripts/bench_scaling.sh [steps=20] [gpu counts="1 2 4 8"]
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_build.sh
STEPS=${1:-20} COUNTS=${2:-"1 2 4 8"}
KILL_AT=${KILL_AT:-12} CKPT_EVERY=${CKPT_EVERY:-5}
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}
fail=0
echo "== build ($BUILD_DIR) $(date -u +%H:%M:%S)"
gpu_build scaling polargpt
NGPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l)
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
WORK=$(mktemp -d)
counts=()
for n in $COUNTS; do ((n <= NGPU && 8 % n == 0)) && counts+=("$n"); done
MAXN=${counts[-1]}
echo "== $NGPU x $GPU; runs on ${counts[*]} GPU(s), $STEPS steps each"

# train NAME NPROC SET...: launch.sh --standalone with NPROC ranks; the run directory is
# $WORK/NAME, the console in $LOGS/scaling_NAME.txt.
train() {
  local name=$1 nproc=$2
  shift 2
  echo "== $name: $nproc rank(s) $* ($(date -u +%H:%M:%S))"
  scripts/launch.sh --standalone --nproc-per-node "$nproc" -- "$BUILD_DIR/polargpt" train \
    --config configs/gpt2-124m.json --device cuda --out "$WORK/$name" \
    --set optim.kind=muon --set train.batch_size=64 --set train.max_steps="$STEPS" --set optim.warmup_steps=5 \
    --set train.log_every=1 --set train.eval_every=0 --set train.checkpoint_every=0 \
    --set data.val="data/brown/brown_train_*.bin" --set train.eval_batches=1 "$@" \
    > "$LOGS/scaling_$name.txt" 2>&1
  local rc=$?
  grep -E "device memory|dist:|error" "$LOGS/scaling_$name.txt" | head -n 4
  ((rc == 0)) || { echo "   $name failed (rc=$rc)"; fail=1; }
  cp "$WORK/$name/metrics.jsonl" "$LOGS/scaling_${name}_metrics.jsonl" 2>/dev/null
  return $rc
}

for n in "${counts[@]}"; do train "dp$n" "$n" --set train.grad_accum=$((8 / n)); done

if ((MAXN >= 2)); then
  train "comm1" 1 --set train.grad_accum=1
  train "comm$MAXN" "$MAXN" --set train.grad_accum=1
  if command -v nsys > /dev/null; then
    echo "== nsys: NCCL kernel time at $MAXN ranks, one micro-batch per step"
    nsys profile -t cuda --stats=false -o "$WORK/comm_nsys" -f true \
      scripts/launch.sh --standalone --nproc-per-node "$MAXN" -- "$BUILD_DIR/polargpt" train \
      --config configs/gpt2-124m.json --device cuda --out "$WORK/comm_nsys_run" --set optim.kind=muon \
      --set train.batch_size=64 --set train.grad_accum=1 --set train.max_steps=10 --set train.eval_every=0 \
      --set train.checkpoint_every=0 --set data.val="data/brown/brown_train_*.bin" --set train.eval_batches=1 \
      > "$LOGS/scaling_nsys.txt" 2>&1 &&
      nsys stats -r cuda_gpu_kern_sum -f csv "$WORK/comm_nsys.nsys-rep" > "$LOGS/scaling_nsys_kernels.csv" 2>&1 ||
      echo "   nsys profile failed (see scaling_nsys.txt)"
  fi

  train "zero1" "$MAXN" --set train.grad_accum=$((8 / MAXN)) --set dist.zero=1

  half=$((MAXN / 2))
  echo "== two nodes on one host: 2 x $half rank(s) ($(date -u +%H:%M:%S))"
  port=$((20000 + RANDOM % 40000))
  node() {  # node RANK CUDA_VISIBLE_DEVICES
    CUDA_VISIBLE_DEVICES=$2 scripts/launch.sh --nnodes 2 --node-rank "$1" --nproc-per-node "$half" \
      --master-addr 127.0.0.1 --master-port "$port" -- "$BUILD_DIR/polargpt" train \
      --config configs/gpt2-124m.json --device cuda --out "$WORK/twonode$1" --set optim.kind=muon \
      --set train.batch_size=64 --set train.grad_accum=$((8 / MAXN)) --set train.max_steps=6 \
      --set optim.warmup_steps=5 --set train.log_every=1 --set train.eval_every=0 --set train.checkpoint_every=0 \
      --set data.val="data/brown/brown_train_*.bin" --set train.eval_batches=1 > "$LOGS/scaling_twonode$1.txt" 2>&1
  }
  node 0 "$(seq -s, 0 $((half - 1)))" &
  pid0=$!
  node 1 "$(seq -s, "$half" $((MAXN - 1)))"
  rc1=$?
  wait "$pid0"
  rc0=$?
  echo "   node 0 rc=$rc0, node 1 rc=$rc1"
  ((rc0 == 0 && rc1 == 0)) || fail=1
  cp "$WORK/twonode0/metrics.jsonl" "$LOGS/scaling_twonode_metrics.jsonl" 2>/dev/null

  echo "== kill rank 1 after step $KILL_AT, then resume ($(date -u +%H:%M:%S))"
  train "kill" "$MAXN" --set train.grad_accum=$((8 / MAXN)) --set train.checkpoint_every="$CKPT_EVERY" &
  lpid=$!
  while kill -0 "$lpid" 2> /dev/null; do
    if grep -qE "step +$KILL_AT/" "$LOGS/scaling_kill.txt" 2> /dev/null; then
      for p in $(pgrep -f "polargpt train .*$WORK/kill"); do
        if tr '\0' '\n' < "/proc/$p/environ" 2> /dev/null | grep -qx "RANK=1"; then
          echo "   SIGKILL to rank 1 (pid $p)"
          kill -9 "$p"
        fi
      done
      break
    fi
    sleep 0.2
  done
  wait "$lpid"
  echo "   launcher exit code $? (expected 137)"
  grep -E "launch.sh: rank" "$LOGS/scaling_kill.txt" | head -n 2
  cp "$LOGS/scaling_kill.txt" "$LOGS/scaling_kill_first.txt"
  # The same flags plus --resume: the run continues in its directory from the latest checkpoint.
  train "kill" "$MAXN" --set train.grad_accum=$((8 / MAXN)) --set train.checkpoint_every="$CKPT_EVERY" \
    --resume "$WORK/kill"
fi

echo "== summary"
python3 - "$LOGS" "$GPU" "$MAXN" "${counts[@]}" <<'PY' || fail=1
import json, os, re, statistics, sys
logs, gpu, maxn, counts = sys.argv[1], sys.argv[2], int(sys.argv[3]), [int(c) for c in sys.argv[4:]]
def recs(name):
    p = f"{logs}/scaling_{name}_metrics.jsonl"
    return [json.loads(l) for l in open(p)] if os.path.exists(p) else []
def tps(name):
    r = [x["tokens_per_s"] for x in recs(name) if "tokens_per_s" in x][5:]  # after start-up
    return statistics.median(r) if r else None
def mem(name):
    p = f"{logs}/scaling_{name}.txt"
    m = re.search(r"device memory: ([0-9.]+) GiB", open(p).read()) if os.path.exists(p) else None
    return float(m.group(1)) if m else None
def losses(name):
    return {x["step"]: x["train_loss"] for x in recs(name) if "train_loss" in x}
out, ok = [], True
out.append(f"GPT-2 124M, Muon, 512K tokens per step, {gpu}\n")
out.append("| GPUs | tokens/s | per GPU | efficiency | memory per GPU (GiB) | max rel. loss diff vs 1 GPU (first 20) |")
out.append("|---:|---:|---:|---:|---:|---:|")
base, ref = tps("dp1"), losses("dp1")
for n in counts:
    t, l = tps(f"dp{n}"), losses(f"dp{n}")
    common = [s for s in sorted(ref) if s in l][:20]
    diff = max((abs(l[s] - ref[s]) / abs(ref[s]) for s in common), default=float("nan"))
    if n > 1 and not diff < 2e-2:
        ok = False
    eff = t / n / base if t and base else float("nan")
    out.append(f"| {n} | {t or 0:,.0f} | {(t or 0) / n:,.0f} | {eff:.3f} | {mem(f'dp{n}')} | {diff:.2e} |")
if maxn >= 2:
    t1, tn = tps("comm1"), tps(f"comm{maxn}")
    if t1 and tn:
        s1, sn = 64 * 1024 / t1, 64 * 1024 * maxn / tn
        out.append(f"\nOne micro-batch per step: {s1 * 1e3:.1f} ms at 1 GPU, {sn * 1e3:.1f} ms at {maxn}: "
                   f"exposed communication {max(0.0, sn - s1) * 1e3:.1f} ms per step")
        p = f"{logs}/scaling_nsys_kernels.csv"
        if os.path.exists(p):
            total = 0.0
            for line in open(p):
                if "nccl" in line.lower():
                    cells = line.split(",")
                    try:
                        total += float(cells[1].strip('"'))  # "Total Time (ns)"
                    except (ValueError, IndexError):
                        pass
            per_step = total / 1e6 / 10 / maxn  # ns -> ms, 10 steps, summed over ranks
            out.append(f"NCCL kernels (nsys): {per_step:.1f} ms per step per GPU; overlapped "
                       f"{max(0.0, per_step - max(0.0, sn - s1) * 1e3):.1f} ms")
    z0, z1 = tps(f"dp{maxn}"), tps("zero1")  # off: the scaling run at the same N
    out.append(f"\nZeRO-1 at {maxn} GPUs: off {z0 or 0:,.0f} tokens/s, {mem(f'dp{maxn}')} GiB per GPU; "
               f"on {z1 or 0:,.0f} tokens/s, {mem('zero1')} GiB per GPU")
    l0, lk = losses("twonode0"), losses(f"dp{maxn}")
    common = [s for s in sorted(l0) if s in lk]
    d2 = max((abs(l0[s] - lk[s]) / abs(lk[s]) for s in common), default=float("nan"))
    out.append(f"Two nodes on one host: {len(l0)} steps logged; max rel. loss diff vs the one-launch run {d2:.2e}")
    if not d2 < 2e-2:
        ok = False
    kk, full = losses("kill"), losses(f"dp{maxn}")
    later = [s for s in sorted(kk) if s in full and s > 12]
    dk = max((abs(kk[s] - full[s]) / abs(full[s]) for s in later), default=float("nan"))
    out.append(f"Killed rank 1, resumed: steps {later[:1]}..{later[-1:]} vs the uninterrupted run: max rel. diff {dk:.2e}")
    if not dk < 2e-2:
        ok = False
text = "\n".join(out)
print(text)
open(f"{logs}/scaling_summary.md", "w").write(text + "\n")
sys.exit(0 if ok else 1)
PY
exit $fail
