#!/usr/bin/env bash
# Builds dbot in Release. scripts/build.sh deb   -> build-deb/  (Debian libtorch-dev 1.13, CPU)
#                        scripts/build.sh pypi  -> build-pypi/ (PyPI torch wheel, LibTorch 2.x with CUDA)
# Extra arguments go to CMake (e.g. -DDBOT_BUILD_TESTS=OFF).
set -euo pipefail
cd "$(dirname "$0")/.."
flavor="${1:-deb}"
shift || true
jobs="$(nproc)"
case "$flavor" in
  deb) prefix=() ;;
  pypi) prefix=("-DCMAKE_PREFIX_PATH=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')") ;;
  *) echo "usage: scripts/build.sh deb|pypi [cmake args]" >&2; exit 2 ;;
esac
cmake -S . -B "build-$flavor" -DCMAKE_BUILD_TYPE=Release "${prefix[@]}" "$@" >/dev/null
cmake --build "build-$flavor" -j "$jobs"
echo "build.sh: build-$flavor/dbot ready"
