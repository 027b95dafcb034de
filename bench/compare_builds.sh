#!/usr/bin/env bash
# Both LibTorch builds of dbot against the PyTorch each one pairs with, in one invocation: bench/compare.sh for
# build-pypi (LibTorch 2.x) against PyPI torch and for build-deb (LibTorch 1.13) against Debian's python3-torch,
# in fp32 and, where the CPU computes bf16 natively (AVX512-BF16 or AMX-BF16), in bf16. Each compare.sh run is
# printed as it goes and kept in LOG_DIR; at the end, two tables: per implementation and torch, ms/step in each
# precision (the official dBOT form, the fastest PyTorch form, dbot), and per build and precision the ratios the
# performance issue sets targets for (dbot / its GEMM floor, fastest PyTorch / dbot, official / dbot).
#   bench/compare_builds.sh [model=demo|vit_tiny_patch4_32|vit_small_patch16_224|vit_base_patch16_224] [batch]
# Environment: ROUNDS, STEPS, WARMUP, THREADS, DBOT_BENCH_TIMEOUT as for compare.sh; DEVICE (default cpu);
# PRECISIONS (default "fp32", plus "bf16" on a native-bf16 CPU; name bf16 to time it on a CPU that emulates it);
# BUILDS (default "build-pypi build-deb": those of them that hold a dbot binary); PYPI_PYTHON (default python3)
# and DEB_PYTHON (default /usr/bin/python3), the interpreters whose torch each build is compared with; LOG_DIR
# (default a new temporary folder). Exit status 1 when a compare.sh run failed (the tables are still printed).
set -uo pipefail
cd "$(dirname "$0")/.."
model="${1:-demo}"
batch="${2:-}"
device="${DEVICE:-cpu}"
if [[ -z "${PRECISIONS:-}" ]]; then
  PRECISIONS=fp32
  if [[ "$device" == cuda ]] || grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null; then
    PRECISIONS="fp32 bf16"
  fi
fi
read -r -a precisions <<<"$PRECISIONS"
builds=()
for b in ${BUILDS:-build-pypi build-deb}; do
  if [[ -x "$b/dbot" ]]; then builds+=("$b"); else echo "compare_builds.sh: $b/dbot not built, skipped" >&2; fi
done
[[ ${#builds[@]} -gt 0 ]] || { echo "compare_builds.sh: no build to compare (scripts/build.sh deb|pypi)" >&2; exit 2; }
log_dir="${LOG_DIR:-$(mktemp -d /tmp/compare_builds.XXXXXX)}"
mkdir -p "$log_dir" || exit 2

python_for() {  # BUILD: the interpreter whose torch matches the build's LibTorch
  case "$1" in
    *deb*) echo "${DEB_PYTHON:-/usr/bin/python3}" ;;
    *) echo "${PYPI_PYTHON:-python3}" ;;
  esac
}

ok=1
summaries=""  # lines "build precision summary-fields..."
for build in "${builds[@]}"; do
  for precision in "${precisions[@]}"; do
    log="$log_dir/$(basename "$build")-$precision-$model.txt"
    echo "=== $build, $precision, $model: PYTHON=$(python_for "$build") bench/compare.sh $build $device $precision $model $batch"
    PYTHON="$(python_for "$build")" bench/compare.sh "$build" "$device" "$precision" "$model" $batch | tee "$log"
    [[ ${PIPESTATUS[0]} -eq 0 ]] || ok=0
    line="$(sed -n 's/^summary: //p' "$log" | tail -1)"
    [[ -n "$line" ]] || { line="torch=n/a"; ok=0; }
    summaries+="$build $precision $line"$'\n'
    echo
  done
done

echo "=== $model, $device: both builds ($(date -u '+%F %T UTC'); the runs' full output in $log_dir)"
echo
awk -v precs="${precisions[*]}" '
  function none(x) { return x == "" || x == "n/a" }
  function ms(x) { return none(x) ? "n/a" : sprintf("%.2f", x) }
  function ratio(a, b) { return (none(a) || none(b) || b + 0 == 0) ? "n/a" : sprintf("%.2f", a / b) }
  function get(key) { return (key in kv) ? kv[key] : "n/a" }
  NF >= 2 {  # BUILD PRECISION key=value ...
    b = $1; q = $2
    for (k = 3; k <= NF; k++) { eq = index($k, "="); kv[substr($k, 1, eq - 1)] = substr($k, eq + 1) }
    if (!(b in seen)) { seen[b] = 1; order[++n] = b; torch[b] = libtorch[b] = "n/a" }
    if (!none(get("torch"))) torch[b] = get("torch")  # a failed run leaves the version of the others
    if (!none(get("libtorch"))) libtorch[b] = get("libtorch")
    dbot[b, q] = get("dbot_ms"); floor[b, q] = get("floor_ms")
    official[b, q] = get("official_ms"); fastest[b, q] = get("fastest_ms"); form[b, q] = get("fastest_form")
    split("", kv)
  }
  END {
    np = split(precs, p, " ")
    head = "| implementation | torch |"; rule = "|---|---|"
    for (j = 1; j <= np; j++) { head = head " " p[j] " ms/step |"; rule = rule "---|" }
    print head; print rule
    for (i = 1; i <= n; i++) {
      b = order[i]
      row1 = "| official dBOT form (explicit attention, default AdamW) | " torch[b] " |"
      row2 = "| fastest PyTorch form | " torch[b] " |"
      row3 = "| dbot, " b " | " libtorch[b] " (LibTorch) |"
      for (j = 1; j <= np; j++) {
        row1 = row1 " " ms(official[b, p[j]]) " |"
        row2 = row2 " " ms(fastest[b, p[j]]) (none(form[b, p[j]]) ? "" : " (" form[b, p[j]] ")") " |"
        row3 = row3 " " ms(dbot[b, p[j]]) " |"
      }
      print row1; print row2; print row3
    }
    print ""
    print "| build | precision | dbot / GEMM floor (target <= 1.5) | fastest PyTorch / dbot (target >= 2) | official / dbot |"
    print "|---|---|---|---|---|"
    for (i = 1; i <= n; i++)
      for (j = 1; j <= np; j++) {
        b = order[i]; q = p[j]
        printf "| %s | %s | %s | %s | %s |\n", b, q, ratio(dbot[b, q], floor[b, q]), ratio(fastest[b, q], dbot[b, q]),
               ratio(official[b, q], dbot[b, q])
      }
  }' <<<"$summaries"

[[ $ok == 1 ]]
