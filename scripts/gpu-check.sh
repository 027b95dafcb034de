#!/usr/bin/env bash
# The GPU check: build dbot on the GPU machine against the torch installed there, run the tests with CUDA
# required, and benchmark dbot against PyTorch, all from one prepared script (docs: ENGINEERING.md, "GPUs").
#
#   scripts/gpu-check.sh prepare        here (with apt): download the Debian bookworm packages the build needs
#                                       into .gpu-deps/debs (ignored by git; carry it with the device call)
#   scripts/gpu-check.sh run [PHASE...] on the GPU machine, in the repository root, $OUT set: unpack the .debs
#                                       into /tmp/dbot-prefix (never into /), configure, build, test, bench;
#                                       writes $OUT/gpu-check.log and $OUT/summary.md
#
# Phases of run, in order (default: all): probe unpack configure build test bench-bf16 bench-fp16 bench-demo
# ('bench' = the three bench-* phases). Each phase runs under `timeout`; a failed or timed-out phase is
# recorded and the next one runs. The whole run keeps inside DBOT_GPU_CHECK_BUDGET seconds (default 570,
# for the device tool's 600 s per command): a phase gets at most what is left, and is skipped when too
# little is. A later call on the still-warm machine can run the rest, e.g. `scripts/gpu-check.sh run bench`
# (build-gpu/ and /tmp/dbot-prefix stay while the machine is held; unpack reruns if the prefix is gone).
#
# Environment (all optional):
#   OUT                            output folder (default /tmp/gpu-check-out)
#   DBOT_GPU_BUILD_DIR             build folder (default build-gpu)
#   DBOT_GPU_PREFIX                where the .debs are unpacked (default /tmp/dbot-prefix)
#   DBOT_GPU_CHECK_CONFIGURE_ONLY  1: phases probe, unpack, configure only (the CPU rehearsal)
#   DBOT_GPU_CHECK_BUDGET          seconds for the whole run (default 570)
#   DBOT_GPU_CTEST_JOBS            ctest -j (default 4)
#   DBOT_GPU_LINK_DATA             1 (default): when /usr/share/datasets/fashion-mnist is missing, make it a
#                                  symlink to the unpacked dataset-fashion-mnist (tests/e2e.sh reads that path)
#   PYTHON                         the Python with torch (default /opt/torch/.venv/bin/python, else python3)
#   STEPS, WARMUP                  timed / untimed steps of the benchmarks (default 20 / 5)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
DEBS="$ROOT/.gpu-deps/debs"
# The build's -dev packages and the runtime libraries they need that a non-Debian machine may not have
# (libyaml-cpp0.7: libyaml-cpp.so.0.7; zlib1g: libz.so.1.2.13, which zlib1g-dev's libz.so points to;
# googletest: libgtest-dev depends on it). CLI11 and nlohmann-json are header-only; gtest is static.
# dataset-fashion-mnist: the data that tests/e2e.sh trains on.
PACKAGES=(libyaml-cpp-dev libyaml-cpp0.7 libcli11-dev nlohmann-json3-dev libgtest-dev googletest zlib1g-dev zlib1g
          libjpeg62-turbo-dev libjpeg62-turbo libpng-dev libpng16-16 libwebp-dev libwebp7
          libtcmalloc-minimal4 dataset-fashion-mnist)

# ---------------------------------------------------------------------------------------------------------
prepare() {
  mkdir -p "$DEBS"
  grep -qxF '.gpu-deps/' .gitignore 2>/dev/null || echo "prepare: note: .gpu-deps/ is not in .gitignore"
  local p ver enc fetched=() kept=()
  for p in "${PACKAGES[@]}"; do
    ver="$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')"
    if [[ -z "$ver" || "$ver" == "(none)" ]]; then
      echo "prepare: apt knows no candidate for $p; running apt-get update"
      apt-get update -qq || { echo "prepare: apt-get update failed" >&2; return 1; }
      ver="$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')"
      [[ -n "$ver" && "$ver" != "(none)" ]] || { echo "prepare: no package $p" >&2; return 1; }
    fi
    enc="${ver//:/%3a}"
    if compgen -G "$DEBS/${p}_${enc}_*.deb" >/dev/null; then
      kept+=("$p=$ver")
      continue
    fi
    rm -f "$DEBS/${p}"_*.deb  # an older version
    # apt-get download as root warns that _apt cannot write here; the download itself works.
    (cd "$DEBS" && apt-get download -q "$p=$ver" 2>&1 | grep -v "unsandboxed as root") ||
      { echo "prepare: apt-get download $p=$ver failed" >&2; return 1; }
    compgen -G "$DEBS/${p}_${enc}_*.deb" >/dev/null || { echo "prepare: $p: no .deb after download" >&2; return 1; }
    fetched+=("$p=$ver")
  done
  echo "prepare: downloaded ${#fetched[@]}: ${fetched[*]:-(none)}"
  echo "prepare: already there ${#kept[@]}: ${kept[*]:-(none)}"
  echo "prepare: $DEBS holds $(ls "$DEBS"/*.deb | wc -l) .debs, $(du -sh "$DEBS" | cut -f1)"
  echo "prepare: carry '.gpu-deps' with the device call, then run: scripts/gpu-check.sh run"
}

# ---------------------------------------------------------------------------------------------------------
# run: configuration shared with the phases (each phase is this script run again as `_phase NAME`, so that
# `timeout` can stop it with everything it started).
setup_env() {
  export OUT="${OUT:-/tmp/gpu-check-out}"
  export BUILD="${DBOT_GPU_BUILD_DIR:-build-gpu}"
  export PREFIX="${DBOT_GPU_PREFIX:-/tmp/dbot-prefix}"
  export PHASEDIR="${TMPDIR:-/tmp}/dbot-gpu-check-phases"
  export LOG="$OUT/gpu-check.log"
  if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x /opt/torch/.venv/bin/python ]]; then PYTHON=/opt/torch/.venv/bin/python; else PYTHON="$(command -v python3)"; fi
  fi
  export PYTHON
  # The venv's bin first: its python3 (tests/e2e.sh's torch.load check), cmake and ninja.
  export PATH="$(dirname "$PYTHON"):$PATH"
  if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then export PATH="$PATH:/usr/local/cuda/bin"; fi
  export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"  # Hopper; skips the arch probe in Torch's CMake
  export DBOT_FMNIST_DIR="$PREFIX/usr/share/datasets/fashion-mnist"
}

phase_probe() {
  date -u '+%F %T UTC'
  uname -a
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi failed"
  "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")'
  "$PYTHON" -c 'import torch; print("cmake prefix", torch.utils.cmake_prefix_path)'
  cmake --version | head -1
  ninja --version 2>/dev/null | sed 's/^/ninja /' || echo "no ninja"
  c++ --version | head -1
  nvcc --version 2>/dev/null | tail -1 || echo "no nvcc on PATH"
  lscpu | sed -n 's/^Model name: *//p' | head -1
  echo "cores $(nproc)"
}

phase_unpack() {
  compgen -G "$DEBS/*.deb" >/dev/null || { echo "no .debs in $DEBS: run 'scripts/gpu-check.sh prepare' here and carry .gpu-deps"; return 1; }
  rm -rf "$PREFIX" && mkdir -p "$PREFIX"
  local f
  for f in "$DEBS"/*.deb; do
    dpkg -x "$f" "$PREFIX" || { echo "dpkg -x $f failed"; return 1; }
    echo "unpacked $(basename "$f")"
  done
  # zlib1g-dev's libz.so is an absolute link to /lib/x86_64-linux-gnu/libz.so.1.2.13; point it at the copy here.
  local z="$PREFIX/usr/lib/x86_64-linux-gnu/libz.so"
  if [[ -L "$z" ]]; then
    local target
    target="$(find "$PREFIX" -name 'libz.so.1.*' -type f | head -1)"
    [[ -n "$target" ]] && ln -sfn "$target" "$z" && echo "libz.so -> $target"
  fi
  # Config files that hard-code /usr would point outside the prefix: report any (none in bookworm's).
  grep -rlE 'INTERFACE_INCLUDE_DIRECTORIES "/usr|IMPORTED_LOCATION[A-Z_]* "/usr' "$PREFIX/usr/lib/x86_64-linux-gnu/cmake" \
    "$PREFIX/usr/share/cmake" 2>/dev/null | sed 's/^/warning: hard-coded \/usr path in /'
  if [[ "${DBOT_GPU_LINK_DATA:-1}" == 1 && ! -e /usr/share/datasets/fashion-mnist && -d "$DBOT_FMNIST_DIR" ]]; then
    mkdir -p /usr/share/datasets && ln -s "$DBOT_FMNIST_DIR" /usr/share/datasets/fashion-mnist &&
      echo "linked /usr/share/datasets/fashion-mnist -> $DBOT_FMNIST_DIR (for tests/e2e.sh)"
  fi
  du -sh "$PREFIX"
}

phase_configure() {
  local torch_prefix gen=()
  torch_prefix="$("$PYTHON" -c 'import torch; print(torch.utils.cmake_prefix_path)')" || return 1
  command -v ninja >/dev/null && [[ ! -f "$BUILD/CMakeCache.txt" ]] && gen=(-G Ninja)
  local lib="$PREFIX/usr/lib/x86_64-linux-gnu" share="$PREFIX/usr/share"
  set -x
  cmake -S . -B "$BUILD" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
    "-DCMAKE_PREFIX_PATH=$torch_prefix;$PREFIX/usr;$lib/cmake;$share/cmake" \
    "-Dyaml-cpp_DIR=$lib/cmake/yaml-cpp" "-DCLI11_DIR=$share/cmake/CLI11" \
    "-Dnlohmann_json_DIR=$share/cmake/nlohmann_json" "-DGTest_DIR=$lib/cmake/GTest" \
    "-DZLIB_ROOT=$PREFIX/usr" "-DZLIB_INCLUDE_DIR=$PREFIX/usr/include" "-DZLIB_LIBRARY=$lib/libz.so" \
    "-DJPEG_INCLUDE_DIR=$PREFIX/usr/include;$PREFIX/usr/include/x86_64-linux-gnu" "-DJPEG_LIBRARY=$lib/libjpeg.so" \
    "-DPNG_PNG_INCLUDE_DIR=$PREFIX/usr/include" "-DPNG_LIBRARY=$lib/libpng16.so" \
    "-DWEBP_INCLUDE_DIR=$PREFIX/usr/include" "-DWEBP_LIBRARY=$lib/libwebp.so" || return 1
  { set +x; } 2>/dev/null
  verify_prefix
}

# Every third-party build dependency must come from $PREFIX, not from a system copy.
verify_prefix() {
  local cache="$BUILD/CMakeCache.txt" bad=0 key val
  echo "where CMake found the dependencies ($cache):"
  for key in yaml-cpp_DIR CLI11_DIR nlohmann_json_DIR GTest_DIR ZLIB_INCLUDE_DIR ZLIB_LIBRARY_RELEASE ZLIB_LIBRARY \
    JPEG_LIBRARY PNG_LIBRARY WEBP_LIBRARY Torch_DIR; do
    val="$(grep -E "^$key:[A-Z]+=" "$cache" | head -1 | cut -d= -f2-)"
    [[ -z "$val" ]] && continue
    if [[ "$key" == Torch_DIR || "$val" == "$PREFIX"* ]]; then echo "  ok   $key=$val"; else echo "  BAD  $key=$val"; bad=1; fi
  done
  # The include path the compiler gets: the prefix's include dir, as -isystem (imported targets).
  if [[ -f "$BUILD/compile_commands.json" ]]; then
    if grep -q -- "-isystem $PREFIX/usr/include" "$BUILD/compile_commands.json"; then
      echo "  ok   compile commands carry -isystem $PREFIX/usr/include"
    else
      echo "  BAD  compile commands lack -isystem $PREFIX/usr/include"; bad=1
    fi
  fi
  local link
  link="$(cat "$BUILD/build.ninja" "$BUILD"/CMakeFiles/*/link.txt "$BUILD"/*/CMakeFiles/*/link.txt 2>/dev/null)"
  for lib in libyaml-cpp.so libgtest.a; do
    if grep -qF "$PREFIX/usr/lib/x86_64-linux-gnu/$lib" <<<"$link"; then echo "  ok   links $PREFIX/usr/lib/x86_64-linux-gnu/$lib"
    else echo "  BAD  no link line names $PREFIX/usr/lib/x86_64-linux-gnu/$lib"; bad=1; fi
  done
  return $bad
}

phase_build() { cmake --build "$BUILD" -j "$(nproc)"; }

phase_test() {
  cd "$BUILD" || return 1
  DBOT_REQUIRE_CUDA=1 DBOT_REQUIRE_PYTHON_TORCH=1 ctest --output-on-failure -j "${DBOT_GPU_CTEST_JOBS:-4}" --timeout 300
  local rc=$?
  [[ -f Testing/Temporary/LastTest.log ]] && cp Testing/Temporary/LastTest.log "$OUT/ctest-LastTest.log"
  return $rc
}

phase_bench_bf16() { bash bench/compare.sh "$BUILD" cuda bf16 vit_base_patch16_224 256; }
phase_bench_fp16() { bash bench/compare.sh "$BUILD" cuda fp16 vit_base_patch16_224 256; }
phase_bench_demo() {
  local p rc=0
  for p in fp32 bf16; do
    echo "\$ $BUILD/dbot bench step --config recipes/fmnist_vit_tiny.yaml --device cuda --precision $p --steps 50 --warmup 10 --threads $(nproc)"
    "$BUILD/dbot" bench step --config recipes/fmnist_vit_tiny.yaml --device cuda --precision "$p" --steps 50 --warmup 10 \
      --threads "$(nproc)" || rc=1
  done
  # The gradient all-reduce through NCCL on this one GPU (world size 1: the code path, not a ring).
  echo "\$ $BUILD/dbot bench allreduce --device cuda"
  "$BUILD/dbot" bench allreduce --device cuda || rc=1
  return $rc
}

# ---------------------------------------------------------------------------------------------------------
log() { echo "$*" | tee -a "$LOG"; }

write_summary() {
  local s="$OUT/summary.md" f
  {
    echo "# dbot GPU check"
    echo
    echo "- date: $(date -u '+%F %T UTC'); commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "- GPU: $GPU_LINE"
    echo "- torch: $TORCH_LINE at $PYTHON"
    echo "- CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
    f="$PHASEDIR/test.out"
    [[ -f "$f" ]] && echo "- ctest: $(grep -E 'tests passed|No tests were found' "$f" | tail -1)"
    echo
    echo "| phase | result | seconds |"
    echo "|---|---|---|"
    cat "$PHASEDIR/status.md" 2>/dev/null
    if [[ -f "$PHASEDIR/configure.out" ]]; then
      echo
      echo "## Dependencies from the prefix"
      echo
      echo '```'
      sed -n '/^where CMake found/,$p' "$PHASEDIR/configure.out" | grep -E '^(where|  )'
      echo '```'
    fi
    [[ -f "$PHASEDIR/test.out" ]] && grep -q 'The following tests FAILED' "$PHASEDIR/test.out" && {
      echo
      echo "## Failed tests"
      echo
      echo '```'
      sed -n '/The following tests FAILED/,$p' "$PHASEDIR/test.out" | head -40
      echo '```'
    }
    for f in bench-bf16 bench-fp16; do
      [[ -f "$PHASEDIR/$f.out" ]] || continue
      echo
      echo "## $f: vit_base_patch16_224, batch 256"
      echo
      grep -E '^(machine|date|dbot|run):' "$PHASEDIR/$f.out" | sed 's/^/    /'
      echo
      sed -n '/^| [^ ]*, cuda, /,$p' "$PHASEDIR/$f.out" | grep -E '^\||^vs |^$'
    done
    if [[ -f "$PHASEDIR/bench-demo.out" ]]; then
      echo
      echo "## bench-demo: dbot bench step, recipes/fmnist_vit_tiny.yaml, cuda"
      echo
      grep -E '^\$|^\||^dbot-bench:' "$PHASEDIR/bench-demo.out"
    fi
  } >"$s"
}

run() {
  setup_env
  mkdir -p "$OUT" "$PHASEDIR"
  rm -f "$PHASEDIR"/*
  : >"$LOG"
  GPU_LINE="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
  GPU_LINE="${GPU_LINE:-none (nvidia-smi failed)}"
  TORCH_LINE="$("$PYTHON" -c 'import torch; print(torch.__version__, "(CUDA", str(torch.version.cuda) + ")")' 2>/dev/null)"
  TORCH_LINE="${TORCH_LINE:-not importable}"
  local phases=("$@") budget="${DBOT_GPU_CHECK_BUDGET:-570}" t0=$SECONDS
  if [[ "${DBOT_GPU_CHECK_CONFIGURE_ONLY:-0}" == 1 ]]; then
    phases=(probe unpack configure)
  elif ((${#phases[@]} == 0)); then
    phases=(probe unpack configure build test bench-bf16 bench-fp16 bench-demo)
  fi
  # 'bench' = its three parts; unpack first whenever the prefix is gone (a later call on a fresh machine).
  local expanded=() p
  for p in "${phases[@]}"; do
    if [[ "$p" == bench ]]; then expanded+=(bench-bf16 bench-fp16 bench-demo); else expanded+=("$p"); fi
  done
  if [[ ! -d "$PREFIX/usr" && " ${expanded[*]} " != *" unpack "* ]]; then expanded=(unpack "${expanded[@]}"); fi
  declare -A limit=([probe]=60 [unpack]=120 [configure]=180 [build]=420 [test]=300 [bench-bf16]=180 [bench-fp16]=180
                    [bench-demo]=90)
  log "gpu-check run: phases ${expanded[*]}; budget ${budget}s; OUT=$OUT BUILD=$BUILD PREFIX=$PREFIX PYTHON=$PYTHON"
  local failed=0
  for p in "${expanded[@]}"; do
    [[ -n "${limit[$p]:-}" ]] || { log "unknown phase '$p'"; failed=1; continue; }
    local left=$((budget - (SECONDS - t0) - 10)) lim="${limit[$p]}" start=$SECONDS rc
    ((lim > left)) && lim=$left
    if ((lim < 20)); then
      log "=== $p: skipped, ${left}s of the budget left"
      echo "| $p | skipped (budget) | 0 |" >>"$PHASEDIR/status.md"
      failed=1
      continue
    fi
    log "=== $p (limit ${lim}s, $(date -u +%T))"
    timeout -k 10 "$lim" bash "$0" _phase "$p" 2>&1 | tee "$PHASEDIR/$p.out" | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    local res="ok"
    if ((rc == 124 || rc == 137)); then res="TIMEOUT after ${lim}s"; elif ((rc != 0)); then res="FAILED (exit $rc)"; fi
    ((rc != 0)) && failed=1
    log "=== $p: $res in $((SECONDS - start))s"
    echo "| $p | $res | $((SECONDS - start)) |" >>"$PHASEDIR/status.md"
    write_summary
  done
  write_summary
  log "gpu-check run: done in $((SECONDS - t0))s; summary in $OUT/summary.md"
  return $failed
}

case "${1:-}" in
  prepare) prepare ;;
  run) shift; run "$@" ;;
  _phase)
    setup_env
    case "$2" in
      probe) phase_probe ;; unpack) phase_unpack ;; configure) phase_configure ;; build) phase_build ;;
      test) phase_test ;; bench-bf16) phase_bench_bf16 ;; bench-fp16) phase_bench_fp16 ;;
      bench-demo) phase_bench_demo ;; *) echo "unknown phase $2" >&2; exit 2 ;;
    esac ;;
  *) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
