#!/usr/bin/env bash
# Data-parallel scaling on one CPU machine: the demo recipe (recipes/fmnist_vit_tiny.yaml, global batch 128)
# trained for the same iterations by 1 process x N threads (batch 128) and by N processes x 1 thread
# (--nproc N, batch 128 / N), one after the other in one invocation. Prints a markdown table: images/s of
# the training loop (dbot's summary line, setup excluded), the ratio to 1 x N threads, and the share of
# rank 0's time in collectives (metrics.jsonl's comm, mean over the log steps; waiting for the slowest
# rank included).
#   bench/dist_scaling.sh [build dir=build-pypi] [processes=2] [iterations=117]
# Environment: DBOT_FMNIST_DIR (default /usr/share/datasets/fashion-mnist), PRECISION (default fp32).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
dbot="${1:-build-pypi}/dbot"
n="${2:-2}"
iters="${3:-117}"
fmnist="${DBOT_FMNIST_DIR:-/usr/share/datasets/fashion-mnist}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
common=(--config recipes/fmnist_vit_tiny.yaml --set data.path="$fmnist" --set train.log_every=10 --no-eval
        --precision "${PRECISION:-fp32}" --stop-after "$iters")

# run NAME ARGS...: prints "images/s comm" of one run
run() {
  local name=$1
  shift
  "$dbot" pretrain "${common[@]}" --output "$work/$name" "$@" >"$work/$name.log" 2>&1 ||
    { echo "$name failed: $(tail -2 "$work/$name.log")" >&2; echo "- -"; return; }
  local ips comm
  ips=$(sed -n 's/^pretraining: .* \([0-9.]*\) images\/s$/\1/p' "$work/$name.log")
  comm=$(grep '"type":"step"' "$work/$name/metrics.jsonl" | sed -n 's/.*"comm":\([0-9.e+-]*\).*/\1/p' |
    awk '{ s += $1; k++ } END { if (k) printf "%.1f%%", 100 * s / k; else print "-" }')
  echo "$ips $comm"
}

read -r one_ips _ < <(run one --threads "$n" --set optim.batch_size=128)
read -r many_ips many_comm < <(run many --nproc "$n" --set optim.batch_size=$((128 / n)))
echo "| run | images/s | vs 1 x $n threads | time in collectives |"
echo "|---|---|---|---|"
echo "| 1 process x $n threads, batch 128 | $one_ips | 1.00 | - |"
ratio=$(awk -v a="$many_ips" -v b="$one_ips" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
echo "| $n processes x 1 thread, batch $((128 / n)) each | $many_ips | $ratio | $many_comm |"
echo
echo "$iters iterations each; $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $(date -u +%F)"
