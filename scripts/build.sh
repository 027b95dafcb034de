#!/usr/bin/env bash
# Builds dbot in Release. scripts/build.sh deb   -> build-deb/  (Debian libtorch-dev 1.13, CPU)
#                        scripts/build.sh pypi  -> build-pypi/ (PyPI torch wheel, LibTorch 2.x with CUDA)
# Extra arguments go to CMake (e.g. -DDBOT_BUILD_TESTS=OFF).
set -euo pipefail
cd "$(dirname "$0")/.."
flavor="${1:-deb}"
shift || true
jobs="$(nproc)"
cmake=cmake
case "$flavor" in
  deb) prefix=() ;;
  pypi)
    prefix=("-DCMAKE_PREFIX_PATH=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')")
    # PyPI's CMake when installed (install-deps.sh --pypi): the wheel's config enables CUDA wherever a CUDA
    # toolkit is installed, and Debian 12's CMake 3.25 fails on CUDA 13's nvcc.
    cmake="$(python3 -c 'import cmake, os; print(os.path.join(cmake.CMAKE_BIN_DIR, "cmake"))' 2>/dev/null || echo cmake)" ;;
  *) echo "usage: scripts/build.sh deb|pypi [cmake args]" >&2; exit 2 ;;
esac
# Clang when installed (install-deps.sh installs it): with -fpch-instantiate-templates (CMake adds it for
# Clang's precompiled headers) LibTorch's header templates are instantiated once per target, not once per
# file; GCC spends 1-2 minutes per file on them on a slow 2-core machine (docs/PERFORMANCE.md, "build time").
compiler=()
if [[ -z "${CXX:-}" ]] && command -v clang++ >/dev/null; then compiler=(-DCMAKE_CXX_COMPILER=clang++); fi
"$cmake" -S . -B "build-$flavor" -DCMAKE_BUILD_TYPE=Release "${prefix[@]}" "${compiler[@]}" "$@" >/dev/null
"$cmake" --build "build-$flavor" -j "$jobs"
echo "build.sh: build-$flavor/dbot ready"
