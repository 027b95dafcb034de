#!/usr/bin/env bash
# Data-parallel runs from the command line (issue 7), on loopback Gloo:
#   1. `--nproc 2` trains and evaluates; rank 0 alone prints and writes; 2 x batch 16 ends on the losses of
#      1 x batch 32 (the metrics' last epoch loss, within fp32 rounding);
#   2. `torchrun --no-python --nproc-per-node 2` runs the same job (when python3 has torch; required with
#      DBOT_REQUIRE_PYTHON_TORCH=1);
#   3. SIGTERM to one rank of a `--nproc 2` run stops both with a checkpoint (exit 143); so does SIGTERM to the
#      launcher; --resume finishes;
#   4. kill -9 of one rank of a job started by hand (torchrun's variables, no supervisor) makes the other
#      fail within --dist-timeout with an error saying so; so does a rank that hangs (SIGSTOP); the job
#      restarted from the checkpoint finishes;
#      kill -9 of one rank under --nproc: the launcher names it and stops the other;
#   5. `dbot bench allreduce --nproc 2` prints its table.
#   tests/dist_cli.sh <path to dbot> <work dir>
set -uo pipefail
dbot="$1"
work="$2"
source "$(dirname "$0")/cli_lib.sh"

args=("${tiny[@]}" --set data.test_limit=500 --set train.log_every=6 --precision fp32)
short=(--set "mkd.stage_epochs=[0, 1, 2]")
long=(--set "mkd.stage_epochs=[0, 10, 20]" --set train.checkpoint_every=10 --no-eval)

last_epoch_loss() { grep '"type":"epoch"' "$1/metrics.jsonl" | tail -1 | sed 's/.*"loss":\([0-9.e+-]*\).*/\1/'; }
# wait_for FILE PATTERN PID: until FILE has a line matching PATTERN (training has begun), or PID is gone.
wait_for() {
  for _ in $(seq 600); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# 1. --nproc 2 against one process with the whole batch.
"$dbot" pretrain "${args[@]}" "${short[@]}" --set optim.batch_size=32 --threads 1 --no-eval --output "$work/one" \
  >"$work/one.log" 2>&1 || fail "one process: $(tail -2 "$work/one.log")"
"$dbot" pretrain "${args[@]}" "${short[@]}" --set optim.batch_size=16 --nproc 2 --output "$work/two" \
  >"$work/two.log" 2>&1 || fail "--nproc 2: $(tail -2 "$work/two.log")"
[[ $(grep -c "^dbot pretrain: " "$work/two.log") == 1 ]] || fail "--nproc 2: not one header (rank 0 alone prints)"
grep -q "2 processes (Gloo all-reduce)" "$work/two.log" || fail "--nproc 2: the header does not say 2 processes"
grep -q "| 2 | stage-2.pt:model |" "$work/two.log" || fail "--nproc 2: no per-stage evaluation"
a=$(last_epoch_loss "$work/one") b=$(last_epoch_loss "$work/two")
awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a > 0 && d <= 1e-4 * a) }' ||
  fail "last epoch loss: 1 x 32 gives $a, 2 x 16 gives $b"
echo "1 x 32: last epoch loss $a; 2 x 16 (--nproc 2): $b"

# 2. torchrun --no-python.
if python3 -c "import torch.distributed.run" 2>/dev/null; then
  port=$((20000 + RANDOM % 20000))
  python3 -m torch.distributed.run --no-python --nproc-per-node 2 --master-port "$port" "$dbot" pretrain "${args[@]}" "${short[@]}" \
    --set optim.batch_size=16 --no-eval --output "$work/torchrun" >"$work/torchrun.log" 2>&1 ||
    fail "torchrun: $(tail -3 "$work/torchrun.log")"
  c=$(last_epoch_loss "$work/torchrun")
  [[ "$c" == "$b" ]] || fail "torchrun's last epoch loss $c differs from --nproc 2's $b"
  echo "torchrun --no-python --nproc-per-node 2: last epoch loss $c"
elif [[ "${DBOT_REQUIRE_PYTHON_TORCH:-0}" == 1 ]]; then
  fail "no torchrun (scripts/install-deps.sh --pypi)"
fi

# 3. SIGTERM to rank 1 only.
"$dbot" pretrain "${args[@]}" "${long[@]}" --set optim.batch_size=16 --nproc 2 --output "$work/term" \
  >"$work/term.log" 2>&1 &
launcher=$!
if wait_for "$work/term.log" "^stage 1 epoch" "$launcher"; then
  rank1=$(pgrep -P "$launcher" | sort -n | tail -1)
  kill -TERM "$rank1"
fi
wait "$launcher"
rc=$?
[[ $rc == 143 ]] || fail "SIGTERM to rank 1: exit status $rc, expected 143: $(tail -3 "$work/term.log")"
grep -qF "stopped by SIGTERM; $work/term/checkpoint-last.pt is written" "$work/term.log" ||
  fail "SIGTERM to rank 1: rank 0 did not stop with a checkpoint"
# SIGTERM to the launcher: passed to both ranks once, the same orderly stop.
"$dbot" pretrain "${args[@]}" "${long[@]}" --set optim.batch_size=16 --nproc 2 --output "$work/term" --resume \
  >"$work/term2.log" 2>&1 &
launcher=$!
wait_for "$work/term2.log" "^stage" "$launcher" && kill -TERM "$launcher"
wait "$launcher"
rc=$?
[[ $rc == 143 ]] || fail "SIGTERM to the launcher: exit status $rc, expected 143: $(tail -3 "$work/term2.log")"
grep -qF "stopped by SIGTERM; $work/term/checkpoint-last.pt is written" "$work/term2.log" ||
  fail "SIGTERM to the launcher: rank 0 did not stop with a checkpoint"
"$dbot" pretrain "${args[@]}" "${long[@]}" --set optim.batch_size=16 --nproc 2 --output "$work/term" --resume \
  >>"$work/term.log" 2>&1 || fail "resume after SIGTERM: $(tail -2 "$work/term.log")"
[[ -f "$work/term/stage-2.pt" ]] || fail "resume after SIGTERM: no stage-2.pt"

# 4. kill -9 of one rank, started by hand: the other fails within the timeout.
port=$((20000 + RANDOM % 20000))
timeout=20
start_rank() {  # start_rank R [extra args]: rank R of 2 in the background, output in $work/kill.R.log
  local r=$1
  shift
  RANK=$r WORLD_SIZE=2 LOCAL_RANK=$r LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
    "$dbot" pretrain "${args[@]}" "${long[@]}" --set optim.batch_size=16 --output "$work/kill" --dist-timeout "$timeout" "$@" \
    >"$work/kill.$r.log" 2>&1 &
}
# interrupt_rank1 SIGNAL MIN MAX [args]: starts both ranks, sends SIGNAL to rank 1 once training runs, and
# expects rank 0 to fail within MIN..MAX s saying that a process died or hung.
interrupt_rank1() {
  local sig=$1 min=$2 max=$3
  shift 3
  start_rank 0 "$@"
  local pid0=$!
  start_rank 1 "$@"
  local pid1=$!
  wait_for "$work/kill.0.log" "^stage" "$pid0" && sleep 0.3
  kill "-$sig" "$pid1"
  local t0=$SECONDS rc
  wait "$pid0"
  rc=$?
  local elapsed=$((SECONDS - t0))
  kill -9 "$pid1" 2>/dev/null
  wait "$pid1" 2>/dev/null
  [[ $rc == 1 ]] || fail "SIG$sig to rank 1: rank 0 exited with $rc, expected 1"
  ((elapsed >= min && elapsed <= max)) || fail "SIG$sig to rank 1: rank 0 failed after ${elapsed} s"
  grep -q "across 2 processes failed (a process died or hung?)" "$work/kill.0.log" ||
    fail "SIG$sig to rank 1: rank 0's error: $(tail -1 "$work/kill.0.log")"
  echo "SIG$sig to rank 1: rank 0 failed after ${elapsed} s: $(tail -1 "$work/kill.0.log" | cut -c1-200)"
  port=$((port + 1))
}
interrupt_rank1 KILL 0 30
timeout=5  # a rank that hangs: the other fails once --dist-timeout has passed
interrupt_rank1 STOP 4 15 --resume
timeout=20
start_rank 0 --resume
pid0=$!
start_rank 1 --resume
pid1=$!
wait "$pid0" || fail "restart after kill -9, rank 0: $(tail -2 "$work/kill.0.log")"
wait "$pid1" || fail "restart after kill -9, rank 1: $(tail -2 "$work/kill.1.log")"
[[ -f "$work/kill/stage-2.pt" ]] || fail "restart after kill -9: no stage-2.pt"

# kill -9 of one rank under --nproc: the launcher reports it and stops the other.
"$dbot" pretrain "${args[@]}" "${long[@]}" --set optim.batch_size=16 --nproc 2 --dist-timeout 20 \
  --output "$work/nkill" >"$work/nkill.log" 2>&1 &
launcher=$!
if wait_for "$work/nkill.log" "^stage 1 epoch" "$launcher"; then
  kill -9 "$(pgrep -P "$launcher" | sort -n | tail -1)"
fi
wait "$launcher"
rc=$?
[[ $rc == 137 ]] || fail "kill -9 under --nproc: exit status $rc, expected 137"
grep -q "rank 1 of 2 exited with status 137; stopping the other 1" "$work/nkill.log" ||
  fail "kill -9 under --nproc: the launcher did not name rank 1: $(tail -2 "$work/nkill.log")"

# The all-reduce benchmark runs and prints a row per size.
out=$("$dbot" bench allreduce --nproc 2 --mb 1 2 --iters 2 --warmup 1 2>&1) || fail "bench allreduce: $out"
[[ $(grep -c "^| [12].00 |" <<<"$out") == 2 ]] || fail "bench allreduce: not two rows: $out"

((fails == 0)) && echo "dist_cli: all passed"
exit $((fails > 0))
