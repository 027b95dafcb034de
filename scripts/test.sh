#!/usr/bin/env bash
# Installs everything (Debian packages, PyPI torch + timm), builds against both LibTorch sources
# (Debian 1.13 CPU and the PyPI 2.x wheel with CUDA) and runs the whole test suite on both.
# DBOT_SKIP_PYPI=1 tests the Debian build only (says so loudly; CI does not set it).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${DBOT_SKIP_PYPI:-0}" == 1 ]]; then
  echo "test.sh: DBOT_SKIP_PYPI=1: testing the Debian LibTorch build only" >&2
  scripts/install-deps.sh
  flavors=(deb)
else
  scripts/install-deps.sh --pypi
  flavors=(deb pypi)
  export DBOT_REQUIRE_PYTHON_TORCH=1  # the torch.load interop test must run, not skip
  export DBOT_REQUIRE_TRANSFORMERS=1  # and the Hugging Face load of the export
fi
for flavor in "${flavors[@]}"; do
  echo "=== $flavor build ==="
  scripts/build.sh "$flavor" -DDBOT_BUILD_TESTS=ON  # (demo.sh builds without tests)
  (cd "build-$flavor" && ctest --output-on-failure -j "$(nproc)" --timeout 600)
done
echo "test.sh: all tests passed (${flavors[*]})"
