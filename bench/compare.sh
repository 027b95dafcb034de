#!/usr/bin/env bash
# dbot vs a PyTorch implementation of the same dBOT step (bench/pytorch_step.py, the official code's way),
# same sizes, same threads, same machine, one invocation. Prints a table; ratio > 1 means dbot is faster.
#   bench/compare.sh [build dir, default build-pypi] [threads, default 2] [precision fp32|bf16]
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build-pypi}"
threads="${2:-2}"
precision="${3:-fp32}"
recipe=recipes/fmnist_vit_tiny.yaml
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $threads thread(s), $precision, $(date -u +%F)"
dbot_out="$("$build/bench_step" --config "$recipe" --threads "$threads" --precision "$precision" --iters 30)"
echo "$dbot_out"
# The recipe's sizes, for the PyTorch side.
py_out="$(python3 bench/pytorch_step.py --threads "$threads" --precision "$precision" --iters 30 \
  --dim 128 --depth 3 --heads 4 --dec-dim 64 --dec-depth 2 --dec-heads 4 --patch 7 --batch 128 --mask 0.5)"
echo "$py_out"
dbot_ms=$(echo "$dbot_out" | awk -F'|' '/data \+ augmentation/ {d=$3} /whole step/ {s=$3} END {print s - d}')
py_ms=$(echo "$py_out" | sed -E 's/.*: ([0-9.]+) ms\/step.*/\1/')
echo
echo "| implementation | ms/step (model + optimizer, no data) | ratio vs PyTorch |"
echo "|---|---|---|"
echo "| PyTorch (bench/pytorch_step.py) | $py_ms | 1.00 |"
awk -v d="$dbot_ms" -v p="$py_ms" 'BEGIN {printf "| dbot | %.2f | %.2f |\n", d, p / d}'
