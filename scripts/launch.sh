#!/usr/bin/env bash
# Starts the local ranks of a data-parallel run, like torchrun:
#
#   scripts/launch.sh [--nnodes N] [--node-rank R] [--nproc-per-node G] [--master-addr A]
#                     [--master-port P] [--standalone] [--grace S] -- COMMAND [ARGS...]
#
# Defaults: 1 node, node rank 0, 1 process, 127.0.0.1, port 29500. Runs G copies of COMMAND on
# this node, local rank l with
#   RANK = R*G + l, LOCAL_RANK = l, WORLD_SIZE = N*G, LOCAL_WORLD_SIZE = G,
#   MASTER_ADDR = A, MASTER_PORT = P   (polargpt's rank 0 serves the NCCL id there; LOCAL_RANK
#                                       picks the GPU), NCCL_NVLS_ENABLE = 0 unless already set
# and prefixes every line each prints (stdout and stderr) with "[rank RANK] ". SIGINT and SIGTERM
# are forwarded to every rank (a second one sends SIGKILL). When a rank exits non-zero, the
# others get SIGTERM, SIGKILL after --grace seconds (default 5), and the launcher exits with that
# rank's code (128+n for a rank killed by signal n); it exits 0 when every rank did. Run the same
# line, with its own --node-rank, on every node. --standalone: one node on 127.0.0.1 and a free
# port (for several runs on one machine).
set -uo pipefail

usage() {
  sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}
die() {
  echo "launch.sh: $*" >&2
  exit 2
}
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

nnodes=1 node_rank=0 nproc=1 master_addr=127.0.0.1 master_port=29500 standalone=0 grace=5
while (($#)); do
  case $1 in
    --nnodes) nnodes=${2-}; shift 2 || die "--nnodes needs a value" ;;
    --node-rank) node_rank=${2-}; shift 2 || die "--node-rank needs a value" ;;
    --nproc-per-node) nproc=${2-}; shift 2 || die "--nproc-per-node needs a value" ;;
    --master-addr) master_addr=${2-}; shift 2 || die "--master-addr needs a value" ;;
    --master-port) master_port=${2-}; shift 2 || die "--master-port needs a value" ;;
    --grace) grace=${2-}; shift 2 || die "--grace needs a value" ;;
    --standalone) standalone=1; shift ;;
    -h | --help) usage ;;
    --) shift; break ;;
    *) die "unknown option '$1' (the command goes after --; see --help)" ;;
  esac
done
(($#)) || die "no command given (usage: launch.sh [options] -- COMMAND...)"
for v in nnodes node_rank nproc master_port grace; do
  is_uint "${!v}" || die "--${v//_/-} must be a non-negative integer, got '${!v}'"
done
((nnodes >= 1 && nproc >= 1)) || die "--nnodes and --nproc-per-node must be >= 1"
((node_rank < nnodes)) || die "--node-rank $node_rank must be below --nnodes $nnodes"
((master_port >= 1 && master_port <= 65535)) || die "--master-port must be in 1..65535, got $master_port"

if ((standalone)); then
  ((nnodes == 1)) || die "--standalone runs one node; drop --nnodes $nnodes"
  master_addr=127.0.0.1
  # A port nothing answers on (bash's /dev/tcp connects; a refusal means free).
  for _ in $(seq 100); do
    master_port=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$master_port") 2>/dev/null || break
  done
fi

world=$((nnodes * nproc))
pids=() prefixers=() ranks=()
for ((l = 0; l < nproc; l++)); do
  rank=$((node_rank * nproc + l))
  # One prefixing process per rank, fed through its own descriptor; its pid is waited for at
  # the end so that no line is lost.
  exec {out}> >(sed -u "s/^/[rank $rank] /")
  prefixers+=($!)
  # setsid: each rank leads its own process group (its pid is the group id), so a signal reaches
  # its children too, and a terminal's Ctrl-C reaches it once, through the launcher.
  # env --default-signal: a background job of a script starts with SIGINT ignored; the rank
  # must see the forwarded SIGINT like a foreground program would.
  # NCCL_NVLS_ENABLE=0 unless set: NVLink SHARP (multicast) collectives off, as on the machines
  # this is tested on, where multicast objects are not available to every job.
  RANK=$rank LOCAL_RANK=$l WORLD_SIZE=$world LOCAL_WORLD_SIZE=$nproc MASTER_ADDR=$master_addr \
    MASTER_PORT=$master_port NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0} setsid env --default-signal=INT,QUIT "$@" >&$out 2>&1 {out}>&- &
  pids+=($!)
  ranks+=($rank)
  exec {out}>&-
done

signal_all() {  # $1 = signal: to every rank's process group (or the rank, if that is gone)
  for p in "${pids[@]}"; do kill -s "$1" -- "-$p" 2>/dev/null || kill -s "$1" "$p" 2>/dev/null; done
}

signals=0
forward() {  # $1 = TERM | INT
  signals=$((signals + 1))
  local sig=$1
  ((signals > 1)) && sig=KILL
  signal_all "$sig"
}
trap 'forward TERM' TERM
trap 'forward INT' INT

# Poll the ranks: the first non-zero exit stops the others; then wait for all.
declare -A done_code=()
fail_code=0 fail_rank=-1 kill_at=0
while ((${#done_code[@]} < nproc)); do
  for i in "${!pids[@]}"; do
    [[ -n ${done_code[$i]-} ]] && continue
    kill -0 "${pids[$i]}" 2>/dev/null && continue
    wait "${pids[$i]}" 2>/dev/null
    code=$?
    done_code[$i]=$code
    if ((code != 0 && fail_rank < 0)); then
      fail_rank=${ranks[$i]} fail_code=$code
      if ((signals == 0)); then
        echo "launch.sh: rank $fail_rank exited with code $code; stopping the other ranks" >&2
        signal_all TERM
        kill_at=$((SECONDS + grace + 1))  # SECONDS counts whole seconds: wait at least grace
      fi
    fi
  done
  if ((kill_at > 0 && SECONDS >= kill_at)); then
    signal_all KILL
    kill_at=0
  fi
  ((${#done_code[@]} < nproc)) && sleep 0.1
done
for p in "${prefixers[@]}"; do wait "$p" 2>/dev/null; done
exit "$fail_code"
