#!/usr/bin/env bash
# dbot vs PyTorch on one dBOT training step: same sizes, same device, same precision, same machine, one
# invocation. The PyTorch side is bench/pytorch_step.py --all-forms: the official code's form (timm 0.4.12
# explicit attention, AdamW as torch picks it) and the faster forms (SDPA attention, foreach/fused AdamW).
# Prints a markdown table; the ratio is PyTorch ms / dbot ms (above 1: dbot is faster). The last line,
# "summary: torch=V libtorch=V dbot_ms=.. floor_ms=.. official_ms=.. fastest_form=F fastest_ms=..", is what
# bench/compare_builds.sh reads (both LibTorch builds in one invocation).
#   bench/compare.sh [build dir=build-pypi] [device=cpu|cuda] [precision=fp32|bf16|fp16]
#                    [model=demo|vit_tiny_patch4_32|vit_small_patch16_224|vit_base_patch16_224] [batch]
# Environment: THREADS (default 2 on CPU, all cores on CUDA), STEPS (timed steps, default 20), WARMUP
# (default 5), PYTHON (default python3: the one with torch), DBOT_BENCH_TIMEOUT (seconds per side, default
# 1200), ROUNDS (default 1: how many times to run dbot and every PyTorch form, one after the other, dbot first
# in each round; with more than one the table gives each form's median and its range, so that a machine whose
# speed drifts by tens of percent from minute to minute, as shared VMs do, moves every side alike). Exit status 1
# when a run of either side gave no number (the table is still printed).
set -uo pipefail
cd "$(dirname "$0")/.."
build="${1:-build-pypi}"
device="${2:-cpu}"
precision="${3:-fp32}"
model="${4:-demo}"
batch="${5:-}"
py="${PYTHON:-python3}"
steps="${STEPS:-20}"
warmup="${WARMUP:-5}"
limit="${DBOT_BENCH_TIMEOUT:-1200}"
rounds="${ROUNDS:-1}"
if [[ "$device" == cpu ]]; then threads="${THREADS:-2}"; else threads="${THREADS:-$(nproc)}"; fi

recipe=recipes/fmnist_vit_tiny.yaml
dbot_args=(--config "$recipe")
# The same sizes as bench/pytorch_step.py's presets (batch: the preset's unless given).
mae_decoder=(--set mkd.decoder_embed_dim=512 --set mkd.decoder_depth=8 --set mkd.decoder_num_heads=16)
case "$model" in
  demo) ;;
  vit_base_patch16_224 | vit_small_patch16_224)
    dbot_args+=(--model "$model" "${mae_decoder[@]}" --set mkd.mask_ratio=0.75)
    [[ -z "$batch" ]] && { [[ "$model" == vit_base* ]] && batch=128 || batch=32; } ;;
  vit_tiny_patch4_32)
    dbot_args+=(--model "$model" --set mkd.decoder_embed_dim=128 --set mkd.decoder_depth=4
                --set mkd.decoder_num_heads=4 --set mkd.mask_ratio=0.75)
    [[ -z "$batch" ]] && batch=128 ;;
  *) echo "compare.sh: model must be demo, vit_tiny_patch4_32, vit_small_patch16_224 or vit_base_patch16_224," \
       "got '$model'" >&2; exit 2 ;;
esac
batch_args=()
[[ -n "$batch" ]] && batch_args=(--batch "$batch")
dbot_args+=("${batch_args[@]}" --device "$device" --precision "$precision" --steps "$steps" --warmup "$warmup"
            --threads "$threads")

# --- what ran where ---
if [[ "$device" == cuda ]]; then
  machine="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
  machine="GPU ${machine:-unknown (nvidia-smi failed)}; CPU $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
else
  machine="CPU $(lscpu | sed -n 's/^Model name: *//p' | head -1), $threads thread(s)"
fi
py_torch="$("$py" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo 'none')"
libtorch="unknown"
torch_dir="$(sed -n 's/^Torch_DIR:PATH=//p' "$build/CMakeCache.txt" 2>/dev/null)"
if [[ -n "$torch_dir" && -f "$torch_dir/TorchConfigVersion.cmake" ]]; then
  libtorch="$(sed -n 's/.*set(PACKAGE_VERSION "\([^"]*\)").*/\1/p' "$torch_dir/TorchConfigVersion.cmake" | head -1)"
  libtorch="${libtorch:-unknown} ($torch_dir)"
fi
echo "machine: $machine"
echo "date: $(date -u '+%F %T UTC')"
echo "dbot: $build/dbot, LibTorch $libtorch; PyTorch: $py_torch ($py)"
echo "run: model $model, batch ${batch:-recipe/preset default}, $device, $precision, $warmup warmup + $steps timed steps, $rounds round(s)"
echo

# Each run adds a line "form ms images/s" to $results, and each dbot run a line "floor ms" (its GEMM floor).
results="" dbot_ok=1 py_ok=1

record() {  # WHAT RC LINES: adds LINES to $results, or says that WHAT gave no result
  if [[ $2 -ne 0 || -z "$3" ]]; then
    echo "compare.sh: $1 gave no result (exit $2)" >&2
    return 1
  fi
  results+="$3"$'\n'
}

run_dbot() {  # dbot's own line (ms_per_step, images_per_s)
  echo "\$ $build/dbot bench step ${dbot_args[*]}"
  local out rc ms ips floor
  out="$(timeout "$limit" "$build/dbot" bench step "${dbot_args[@]}" 2>&1)"
  rc=$?
  echo "$out"
  ms="$(sed -n 's/^dbot-bench: .*ms_per_step=\([0-9.eE+-]*\).*/\1/p' <<<"$out" | tail -1)"
  ips="$(sed -n 's/^dbot-bench: .*images_per_s=\([0-9.eE+-]*\).*/\1/p' <<<"$out" | tail -1)"
  floor="$(sed -n 's/^dbot-bench: .*gemm_floor_ms=\([0-9.eE+-]*\).*/\1/p' <<<"$out" | tail -1)"
  record "dbot (no 'dbot-bench: ms_per_step=' line)" "$rc" "${ms:+dbot $ms $ips}" || dbot_ok=0
  [[ -n "$floor" ]] && results+="floor $floor"$'\n'
  echo
}

# PyTorch, every form, with glibc's malloc and with tcmalloc preloaded (as PyTorch's CPU tuning guide advises;
# dbot links it): the fastest of them is the baseline.
py_args=(--model "$model" "${batch_args[@]}" --device "$device" --precision "$precision" --iters "$steps"
         --warmup "$warmup" --threads "$threads" --all-forms)
tcmalloc="$(ls /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 2>/dev/null)"
run_pytorch() {
  local preload out rc forms
  for preload in "" ${tcmalloc:+"$tcmalloc"}; do
    echo "\$ ${preload:+LD_PRELOAD=$preload }$py bench/pytorch_step.py ${py_args[*]}"
    rc=0
    out="$(LD_PRELOAD="$preload" timeout "$limit" "$py" bench/pytorch_step.py "${py_args[@]}" 2>&1)" || rc=$?
    echo "$out"
    echo
    forms="$(sed -n "s/^pytorch [^ ]* [^ ]* \([^:]*\): \([0-9.]*\) ms\/step, \([0-9.]*\) images\/s.*/PyTorch:\1${preload:++tcmalloc} \2 \3/p" <<<"$out")"
    record bench/pytorch_step.py "$rc" "$forms" || py_ok=0
  done
}

for ((round = 1; round <= rounds; round++)); do
  [[ $rounds -gt 1 ]] && echo "--- round $round of $rounds ---"
  run_dbot
  run_pytorch
done

# --- the table: per form, the median of its rounds (and their range with more than one) ---
awk -v model="$model" -v dev="$device" -v prec="$precision" -v rounds="$rounds" -v torch="$py_torch" -v libtorch="${libtorch%% *}" '
  function median(v, name,   k, j, t, a, c) {  # of v[name, 1..cnt[name]]; sets lo[name], hi[name]
    c = cnt[name]
    for (k = 1; k <= c; k++) a[k] = v[name, k] + 0
    for (k = 2; k <= c; k++) for (j = k; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    lo[name] = a[1]; hi[name] = a[c]
    return c % 2 ? a[(c + 1) / 2] : (a[c / 2] + a[c / 2 + 1]) / 2
  }
  function ratio(p) { return dbot == "" ? "n/a" : sprintf("%.2f", p / dbot) }
  $1 == "floor" { cnt["floor"]++; floors["floor", cnt["floor"]] = $2; next }
  NF == 3 {
    if (!($1 in cnt)) { order[++n] = $1 }
    cnt[$1]++; ms[$1, cnt[$1]] = $2; ips[$1, cnt[$1]] = $3
  }
  END {
    for (i = 1; i <= n; i++) { f = order[i]; rate[f] = median(ips, f); med[f] = median(ms, f) }  # ms last: its range
    dbot = ("dbot" in med) ? med["dbot"] : ""
    for (i = 1; i <= n; i++) {
      f = order[i]
      if (f == "dbot") continue
      if (best == "" || med[f] < med[best]) best = f
      if (f == "PyTorch:explicit+default") off = f
    }
    range = rounds > 1
    printf "| %s, %s, %s | ms/step%s |%s images/s | PyTorch ms / dbot ms |\n", model, dev, prec,
           (range ? sprintf(" (median of %d)", rounds) : ""), (range ? " range ms |" : "")
    print (range ? "|---|---|---|---|---|" : "|---|---|---|---|")
    if (dbot == "") print (range ? "| dbot | n/a | | n/a | n/a |" : "| dbot | n/a | n/a | n/a |")
    for (i = 1; i <= n; i++) {
      f = order[i]
      name = f == "dbot" ? "dbot" : "PyTorch " substr(f, 9)
      tag = (f == off ? " (official)" : "") (f == best ? " (fastest)" : "")
      printf "| %s%s | %.2f |%s %.1f | %s |\n", name, tag, med[f],
             (range ? sprintf(" %.2f-%.2f |", lo[f], hi[f]) : ""), rate[f], (f == "dbot" ? (dbot == "" ? "n/a" : "1.00") : ratio(med[f]))
    }
    print ""
    if (off != "") printf "vs the official form (explicit+default): PyTorch ms / dbot ms = %s\n", ratio(med[off])
    else print "vs the official form (explicit+default): n/a (form did not run)"
    if (best != "") printf "vs the fastest PyTorch form (%s): PyTorch ms / dbot ms = %s\n", substr(best, 9), ratio(med[best])
    # One line for bench/compare_builds.sh: medians in ms, n/a where a side gave no number.
    printf "summary: torch=%s libtorch=%s dbot_ms=%s floor_ms=%s official_ms=%s fastest_form=%s fastest_ms=%s\n", torch, libtorch,
           (dbot == "" ? "n/a" : dbot), ("floor" in cnt ? median(floors, "floor") : "n/a"),
           (off == "" ? "n/a" : med[off]), (best == "" ? "n/a" : substr(best, 9)), (best == "" ? "n/a" : med[best])
  }' <<<"$results"

[[ $dbot_ok == 1 && $py_ok == 1 ]]
