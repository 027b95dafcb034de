#!/usr/bin/env bash
# Fuzzes one of dbot's file readers with libFuzzer under ASan + UBSan.
#   scripts/fuzz.sh safetensors|checkpoint|torch_save SECONDS
# Builds build-fuzz/ with clang (Debian LibTorch), seeds build-fuzz/corpus-NAME/ with real files (the
# committed safetensors test file, a file the harness writes itself, tests/data/fuzz/NAME-*: inputs that once failed), runs for SECONDS on one core and
# prints libFuzzer's final statistics. A crash, leak, timeout (> 20 s) or allocation over 4 GB stops the run
# and leaves the input in build-fuzz/artifacts-NAME/.
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:?usage: scripts/fuzz.sh safetensors|checkpoint|torch_save SECONDS}"
seconds="${2:-600}"
case "$name" in safetensors | checkpoint | torch_save) ;; *) echo "fuzz.sh: unknown harness '$name'" >&2; exit 2 ;; esac
cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ -DDBOT_FUZZ=ON \
  -DDBOT_BUILD_TESTS=OFF >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target "fuzz_$name"
corpus="build-fuzz/corpus-$name" artifacts="build-fuzz/artifacts-$name/"
mkdir -p "$corpus" "$artifacts"
export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=0"
export LSAN_OPTIONS="suppressions=$PWD/fuzz/lsan.supp:print_suppressions=0"  # LibTorch-internal leaks only
DBOT_FUZZ_WRITE_SEED="$corpus/seed-written" "build-fuzz/fuzz_$name"
if [[ "$name" == safetensors ]]; then cp tests/data/safetensors/*.safetensors "$corpus/"; fi
if [[ "$name" == torch_save ]]; then cp tests/data/teachers/*.pth tests/data/fuzz/checkpoint-* "$corpus/"; fi
cp tests/data/fuzz/"$name"-* "$corpus/" 2>/dev/null || true  # inputs that once failed
"build-fuzz/fuzz_$name" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -malloc_limit_mb=4096 \
  -print_final_stats=1 -artifact_prefix="$artifacts" "$corpus"
