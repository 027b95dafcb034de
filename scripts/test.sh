#!/usr/bin/env bash
# Installs everything (Debian packages, PyPI torch + timm + transformers for the interop checks), builds
# against Debian's LibTorch 1.13 (CPU; what the demo uses) and runs the whole test suite (CI: .ci/run).
#   scripts/test.sh          the Debian LibTorch build (CI)
#   scripts/test.sh --both   also the PyPI LibTorch 2.x build (with CUDA), built and tested the same way;
#                            run it before committing anything that touches src/dbot/compat.* or LibTorch
#                            version differences. CI builds one flavor: on its slowest 2-core machines one
#                            LibTorch build takes ~25 minutes (docs/PERFORMANCE.md, "build time").
# DBOT_SKIP_PYPI=1 installs no PyPI packages (the Python interop checks then skip, and say so).
set -euo pipefail
cd "$(dirname "$0")/.."
flavors=(deb)
case "${1:-}" in
  "") ;;
  --both) flavors=(deb pypi) ;;
  *) echo "usage: scripts/test.sh [--both]" >&2; exit 2 ;;
esac
if [[ "${DBOT_SKIP_PYPI:-0}" == 1 ]]; then
  [[ " ${flavors[*]} " == *" pypi "* ]] && { echo "test.sh: --both needs the PyPI packages (DBOT_SKIP_PYPI=1 is set)" >&2; exit 2; }
  echo "test.sh: DBOT_SKIP_PYPI=1: no PyPI packages; the Python interop checks skip" >&2
  scripts/install-deps.sh
else
  scripts/install-deps.sh --pypi
  export DBOT_REQUIRE_PYTHON_TORCH=1  # the torch.load interop test must run, not skip
  export DBOT_REQUIRE_TRANSFORMERS=1  # and the Hugging Face load of the export
fi
for flavor in "${flavors[@]}"; do
  echo "=== $flavor build ==="
  SECONDS=0
  scripts/build.sh "$flavor" -DDBOT_BUILD_TESTS=ON  # (demo.sh builds without tests)
  echo "test.sh: $flavor built in ${SECONDS} s"
  SECONDS=0
  (cd "build-$flavor" && ctest --output-on-failure -j "$(nproc)" --timeout 600)
  echo "test.sh: $flavor tests ran in ${SECONDS} s"
done
echo "test.sh: all tests passed (${flavors[*]})"
