#!/usr/bin/env bash
# dbot's data loader vs torchvision's ImageFolder + DataLoader on the same JPEGs, the same transform
# (RandomResizedCrop(size, scale 0.2-1, bicubic) + flip to uint8), the same batch and worker counts, the same
# machine, one invocation. dbot runs with data.dct_scale on (JPEGs decoded at 1/2, 1/4, 1/8 when the crop
# allows) and off (always full size, bit-exact with torchvision); torchvision once. Prints the three tables,
# then a summary with the ratio dbot images/s / torchvision images/s per worker count (above 1: dbot faster).
#   bench/compare_data.sh DIR [size=224]
# DIR: an ImageFolder root with DIR/train (bench/make_photos.py DIR makes 2000 real-photo JPEGs).
# Environment: WORKERS (the largest worker count, rows 1 .. WORKERS; default: the core count), IMAGES (timed
# images per row, default 1000), BATCH (default 64), DBOT (default build-pypi/dbot), PYTHON (default
# python3: the one with torch and torchvision), DBOT_BENCH_TIMEOUT (seconds per run, default 1200).
# Exit status 1 when a run gave no numbers (the rest is still printed).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
dir="${1:?usage: bench/compare_data.sh DIR [size]}"
size="${2:-224}"
dbot="${DBOT:-build-pypi/dbot}"
py="${PYTHON:-python3}"
workers="${WORKERS:-$(nproc)}"
images="${IMAGES:-1000}"
batch="${BATCH:-64}"
limit="${DBOT_BENCH_TIMEOUT:-1200}"

echo "machine: CPU $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "date: $(date -u '+%F %T UTC')"
echo "data: $dir/train, $(find "$dir/train" -type f | wc -l) files, $(du -sh "$dir/train" | cut -f1)"
echo "run: size $size, batch $batch, $images timed images per row, workers 1..$workers"
echo

status=0
declare -A ips  # ips[side,workers]
run() {  # side, prefix of its result lines, command...
  local side="$1" prefix="$2"
  shift 2
  echo "\$ $*"
  local out rc
  out="$(timeout "$limit" "$@" 2>&1)"
  rc=$?
  echo "$out"
  echo
  local found=0 w v
  while read -r w v; do
    ips[$side,$w]="$v"
    found=1
  done < <(sed -n "s/^$prefix: workers=\([0-9]*\) images_per_s=\([0-9.eE+-]*\).*/\1 \2/p" <<<"$out")
  if [[ $rc -ne 0 || $found -eq 0 ]]; then
    echo "compare_data.sh: $side gave no '$prefix:' lines (exit $rc)" >&2
    status=1
  fi
}

common=(--size "$size" --images "$images" --batch "$batch")
run dbot_on dbot-bench-data "$dbot" bench data --path "$dir" --workers "$workers" --dct-scale on "${common[@]}"
run dbot_off dbot-bench-data "$dbot" bench data --path "$dir" --workers "$workers" --dct-scale off "${common[@]}"
run torchvision torchvision-bench-data "$py" bench/torchvision_data.py --path "$dir" --workers $(seq 1 "$workers") \
  "${common[@]}"

ratio() { [[ -n "${1:-}" && -n "${2:-}" ]] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }' || echo "n/a"; }
echo "| workers | dbot dct_scale on (images/s) | dbot dct_scale off (images/s) | torchvision (images/s) | dbot on / torchvision | dbot off / torchvision |"
echo "|---|---|---|---|---|---|"
for w in $(seq 1 "$workers"); do
  on="${ips[dbot_on,$w]:-}" off="${ips[dbot_off,$w]:-}" tv="${ips[torchvision,$w]:-}"
  echo "| $w | ${on:-n/a} | ${off:-n/a} | ${tv:-n/a} | $(ratio "$on" "$tv") | $(ratio "$off" "$tv") |"
done
echo
for w in $(seq 1 "$workers"); do
  echo "ratio workers=$w: dbot/torchvision = $(ratio "${ips[dbot_on,$w]:-}" "${ips[torchvision,$w]:-}") (dct_scale on)," \
    "$(ratio "${ips[dbot_off,$w]:-}" "${ips[torchvision,$w]:-}") (dct_scale off)"
done
exit $status
