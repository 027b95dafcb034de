#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install what is missing, build (Release), run the default
# recipe (two-stage dBOT on Fashion-MNIST) and print the per-stage k-NN / linear-probe table.
#   scripts/demo.sh [output dir, default runs/fmnist-demo] [extra dbot pretrain options]
# Re-running continues (--resume) the same run folder, so an interrupted demo picks up where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/fmnist-demo}"
shift || true
scripts/install-deps.sh
scripts/build.sh deb -DDBOT_BUILD_TESTS=OFF
exec build-deb/dbot pretrain --config recipes/fmnist_vit_tiny.yaml --output "$out" --resume "$@"
