#!/usr/bin/env bash
# Runs that survive kills: a short two-stage pretraining is interrupted again and again (kill -9 at random
# moments, and every third time while a checkpoint's temporary file exists, i.e. inside a checkpoint write,
# which DBOT_TEST_WRITE_DELAY_MS makes 300 ms long for those starts; once by SIGTERM, which must stop it with
# a checkpoint and exit 143), resumed after every interruption, and its final student must equal an
# uninterrupted run's bit for bit (fp32, one thread).
#   tests/kill_resume.sh <path to dbot> <work dir> [kills (default 20)]
set -uo pipefail
dbot="$1"
work="$2"
kills="${3:-20}"
source "$(dirname "$0")/cli_lib.sh"

args=("${tiny[@]}" --set optim.batch_size=32
      --set "mkd.stage_epochs=[0, 12, 24]" --set train.checkpoint_every=1 --set train.log_every=24
      --threads 1 --precision fp32 --no-eval)

export_student() {  # export_student RUN OUT: the final student's weights as safetensors
  "$dbot" export --checkpoint "$1/stage-2.pt" --part student --out "$2" >/dev/null 2>&1 ||
    fail "export of $1/stage-2.pt failed"
}

"$dbot" pretrain "${args[@]}" --output "$work/reference" >"$work/reference.log" 2>&1 ||
  { fail "the uninterrupted run failed"; cat "$work/reference.log"; exit 1; }
export_student "$work/reference" "$work/reference.safetensors"

run="$work/killed"
killed=0 inside=0 starts=0 termed=0 finished=0

# interrupt MODE: starts the run (resuming) and interrupts it: "random" kill -9 after 0.2-1 s, "write" kill -9
# the instant a checkpoint's temporary file exists, "term" SIGTERM once training has begun.
interrupt() {
  starts=$((starts + 1))
  local headers
  headers=$(grep -c "^dbot pretrain: " "$run.log" 2>/dev/null)
  headers=${headers:-0}
  local delay=0  # "write": each checkpoint write pauses 300 ms before its rename (io/files.cpp)
  [[ "$1" == write ]] && delay=300
  DBOT_TEST_WRITE_DELAY_MS=$delay "$dbot" pretrain "${args[@]}" --output "$run" --resume >>"$run.log" 2>&1 &
  local pid=$! rc
  case "$1" in
    term)
      for _ in $(seq 400); do  # until this start prints its header (training begins)
        (($(grep -c "^dbot pretrain: " "$run.log") > headers)) && break
        sleep 0.05
      done
      sleep 0.2
      kill -TERM "$pid" 2>/dev/null
      wait "$pid"
      rc=$?
      termed=1
      [[ $rc -eq 143 ]] || fail "SIGTERM: exit status $rc, expected 143"
      grep -qF "stopped by SIGTERM" "$run.log" || fail "SIGTERM: no message naming the checkpoint"
      return ;;
    write)
      for _ in $(seq 400); do
        compgen -G "$run/checkpoint-last.pt.tmp.*" >/dev/null && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
      done ;;
    *) sleep "$(awk -v r="$RANDOM" 'BEGIN { printf "%.3f", 0.2 + 0.8 * r / 32767 }')" ;;
  esac
  kill -9 "$pid" 2>/dev/null
  wait "$pid"
  rc=$?
  if [[ $rc -eq 0 ]]; then finished=1; return; fi  # it finished before the kill
  [[ $rc -eq 137 ]] || { fail "start $starts failed (status $rc): $(tail -2 "$run.log")"; finished=1; return; }
  killed=$((killed + 1))
  if compgen -G "$run/checkpoint-last.pt.tmp.*" >/dev/null; then inside=$((inside + 1)); fi
}

while ((killed < kills && !finished)); do
  if ((killed == kills / 2 && !termed)); then
    interrupt term
  elif ((killed % 3 == 0)); then
    interrupt write
  else
    interrupt random
  fi
done
# A kill right after the temporary appeared may still land after its rename: try again until one is inside.
for _ in $(seq 10); do ((inside == 0 && !finished)) && interrupt write; done
# Finish the run.
"$dbot" pretrain "${args[@]}" --output "$run" --resume >>"$run.log" 2>&1 || fail "the final resume failed: $(tail -3 "$run.log")"
echo "kill_resume: $killed kills -9 ($inside inside a checkpoint write), $termed SIGTERM, $starts starts"
((killed >= kills)) || fail "only $killed kills landed before the run finished"
((inside >= 1)) || fail "no kill landed inside a checkpoint write"
compgen -G "$run/*.tmp.*" >/dev/null && fail "temporary files were left behind: $(ls "$run")"
export_student "$run" "$work/killed.safetensors"
cmp -s "$work/reference.safetensors" "$work/killed.safetensors" ||
  fail "the interrupted run's final student differs from the uninterrupted run's"

if ((fails)); then
  echo "$fails kill/resume check(s) failed"
  exit 1
fi
echo "kill_resume: the final student equals the uninterrupted run's bit for bit"
