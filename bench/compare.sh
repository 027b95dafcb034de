#!/usr/bin/env bash
# dbot vs PyTorch on one dBOT training step: same sizes, same device, same precision, same machine, one
# invocation. The PyTorch side is bench/pytorch_step.py --all-forms: the official code's form (timm 0.4.12
# explicit attention, AdamW as torch picks it) and the faster forms (SDPA attention, foreach/fused AdamW).
# Prints a markdown table; the ratio is PyTorch ms / dbot ms (above 1: dbot is faster).
#   bench/compare.sh [build dir=build-pypi] [device=cpu|cuda] [precision=fp32|bf16|fp16]
#                    [model=demo|vit_tiny_patch4_32|vit_small_patch16_224|vit_base_patch16_224] [batch]
# Environment: THREADS (default 2 on CPU, all cores on CUDA), STEPS (timed steps, default 20), WARMUP
# (default 5), PYTHON (default python3: the one with torch), DBOT_BENCH_TIMEOUT (seconds per side, default
# 1200). Exit status 1 when either side gave no number (the table is still printed).
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
echo "run: model $model, batch ${batch:-recipe/preset default}, $device, $precision, $warmup warmup + $steps timed steps"
echo

# --- dbot ---
echo "\$ $build/dbot bench step ${dbot_args[*]}"
dbot_out="$(timeout "$limit" "$build/dbot" bench step "${dbot_args[@]}" 2>&1)"
dbot_rc=$?
echo "$dbot_out"
dbot_ms="$(sed -n 's/^dbot-bench: .*ms_per_step=\([0-9.eE+-]*\).*/\1/p' <<<"$dbot_out" | tail -1)"
dbot_ips="$(sed -n 's/^dbot-bench: .*images_per_s=\([0-9.eE+-]*\).*/\1/p' <<<"$dbot_out" | tail -1)"
if [[ $dbot_rc -ne 0 || -z "$dbot_ms" ]]; then
  echo "compare.sh: dbot gave no 'dbot-bench: ms_per_step=' line (exit $dbot_rc)" >&2
fi
echo

# --- PyTorch, every form, with glibc's malloc and with tcmalloc preloaded (as PyTorch's CPU tuning guide
# advises; dbot links it): the fastest of them is the baseline ---
py_args=(--model "$model" "${batch_args[@]}" --device "$device" --precision "$precision" --iters "$steps"
         --warmup "$warmup" --threads "$threads" --all-forms)
tcmalloc="$(ls /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 2>/dev/null)"
forms="" py_rc=0
for preload in "" ${tcmalloc:+"$tcmalloc"}; do
  echo "\$ ${preload:+LD_PRELOAD=$preload }$py bench/pytorch_step.py ${py_args[*]}"
  py_out="$(LD_PRELOAD="$preload" timeout "$limit" "$py" bench/pytorch_step.py "${py_args[@]}" 2>&1)" || py_rc=$?
  echo "$py_out"
  echo
  suffix="${preload:++tcmalloc}"
  forms+="$(sed -n "s/^pytorch [^ ]* [^ ]* \([^:]*\): \([0-9.]*\) ms\/step, \([0-9.]*\) images\/s.*/\1$suffix \2 \3/p" <<<"$py_out")"$'\n'
done
forms="$(sed '/^$/d' <<<"$forms")"
if [[ $py_rc -ne 0 || -z "$forms" ]]; then
  echo "compare.sh: bench/pytorch_step.py gave no result (exit $py_rc)" >&2
fi

# --- the table ---
awk -v dms="$dbot_ms" -v dips="$dbot_ips" -v model="$model" -v dev="$device" -v prec="$precision" '
  function ratio(p) { return dms == "" ? "n/a" : sprintf("%.2f", p / dms) }
  NF == 3 { n++; form[n] = $1; ms[n] = $2; ips[n] = $3; if (!best || $2 + 0 < ms[best] + 0) best = n; if ($1 == "explicit+default") off = n }
  END {
    printf "| %s, %s, %s | ms/step | images/s | PyTorch ms / dbot ms |\n", model, dev, prec
    print "|---|---|---|---|"
    printf "| dbot | %s | %s | %s |\n", (dms == "" ? "n/a" : dms), (dips == "" ? "n/a" : dips), (dms == "" ? "n/a" : "1.00")
    for (i = 1; i <= n; i++) {
      tag = (i == off ? " (official)" : "") (i == best ? " (fastest)" : "")
      printf "| PyTorch %s%s | %.2f | %.1f | %s |\n", form[i], tag, ms[i], ips[i], ratio(ms[i])
    }
    print ""
    if (off) printf "vs the official form (explicit+default): PyTorch ms / dbot ms = %s\n", ratio(ms[off])
    else print "vs the official form (explicit+default): n/a (form did not run)"
    if (best) printf "vs the fastest PyTorch form (%s): PyTorch ms / dbot ms = %s\n", form[best], ratio(ms[best])
  }' <<<"$forms"

[[ -n "$dbot_ms" && -n "$forms" ]]
