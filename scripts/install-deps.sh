#!/usr/bin/env bash
# Installs what dbot needs on Debian 12, idempotently: Debian packages by name, and with --pypi the PyPI
# torch wheel (LibTorch 2.x) plus timm and transformers for the reference/interop tests.
#   scripts/install-deps.sh           Debian packages only (LibTorch 1.13 CPU build)
#   scripts/install-deps.sh --pypi    also PyPI torch + timm + transformers (a few GB)
set -euo pipefail

PACKAGES=(
  build-essential cmake ccache pkg-config
  clang                                   # builds 3-10x faster than GCC here: LibTorch's header templates once per target
  libtorch-dev libopenblas0-openmp        # LibTorch 1.13 (CPU) with a fast BLAS (the reference BLAS is ~20x slower)
  libopenblas-openmp-dev                  # cblas.h: the attention's batched products on LibTorch 1.x (model/batched_product)
  libgloo-dev                             # Gloo's headers, for c10d's ProcessGroupGloo (data-parallel runs)
  libtcmalloc-minimal4                    # tcmalloc: glibc's malloc page-faults the CPU step's buffers
  libcli11-dev libyaml-cpp-dev nlohmann-json3-dev zlib1g-dev
  libjpeg62-turbo-dev libpng-dev libwebp-dev libtiff-dev   # image decoding
  gnuplot-nox                             # dbot analyze: the attention-distance and singular-value figures
  googletest libgtest-dev
  dataset-fashion-mnist                   # /usr/share/datasets/fashion-mnist/
  python3 python3-pip
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: Debian packages present"
fi

if [[ "${1:-}" == "--pypi" ]]; then
  # PyPI's cmake too: the torch wheel's CMake config enables CUDA when a CUDA toolkit is installed, and
  # Debian 12's CMake 3.25 cannot drive CUDA 13's nvcc (scripts/build.sh pypi uses this one).
  if python3 -c 'import torch, timm, transformers, tensorboard, safetensors, cmake' 2>/dev/null; then
    echo "install-deps: PyPI torch $(python3 -c 'import torch; print(torch.__version__)'), timm, transformers, tensorboard and cmake present"
  else
    echo "install-deps: pip install torch timm transformers tensorboard cmake (several GB)"
    python3 -m pip install --quiet torch timm transformers tensorboard cmake ||
      python3 -m pip install --quiet --break-system-packages torch timm transformers tensorboard cmake
  fi
fi
