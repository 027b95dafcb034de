# Sourced by the Fashion-MNIST experiment scripts (reproduce_, ablate_, teachers_fmnist.sh): the run helpers they
# share. Every run resumes after a stop and a finished run is skipped, so a script can simply be re-run.
# The caller sets `dbot` (the binary); these read the environment:
#   PRECISION    --precision for every run (default fp32: the figures in docs/RESULTS.md are fp32)
#   TRAIN_LIMIT  use only the first N training images (data.train_limit; default: all, or the caller's default)
#   EXTRA        more arguments for every run, e.g. a smoke test: EXTRA="--set data.test_limit=256"
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pre="$src/recipes/fmnist_vit_tiny.yaml"  # the demo recipe: two stages of 2 epochs from a random teacher
ft="$src/recipes/fmnist_finetune.yaml"
read -r -a extra <<<"${EXTRA:-}"
precision=(--precision "${PRECISION:-fp32}")  # alone for `dbot analyze`
common=("${precision[@]}")
[[ -n "${TRAIN_LIMIT:-}" ]] && common+=(--set "data.train_limit=$TRAIN_LIMIT")
common+=("${extra[@]}")

pretrain_run() {  # pretrain_run DIR ARGS...: `dbot pretrain` of the demo recipe with ARGS into DIR
  local dir="$1"
  shift
  [[ -s "$dir/results.json" ]] && return 0
  echo "== $dbot pretrain --config $pre --output $dir $* ${common[*]}"
  "$dbot" pretrain --config "$pre" --output "$dir" --resume "$@" "${common[@]}"
}

finetune_run() {  # finetune_run DIR ARGS...: `dbot finetune` with recipes/fmnist_finetune.yaml and ARGS into DIR
  local dir="$1"
  shift
  [[ -s "$dir/model.safetensors" ]] && return 0
  local resume=()
  [[ -s "$dir/checkpoint-last.pt" ]] && resume=(--resume)
  echo "== $dbot finetune --config $ft --output $dir $* ${common[*]}"
  "$dbot" finetune --config "$ft" --output "$dir" "${resume[@]}" "$@" "${common[@]}"
}

analyze_run() {  # analyze_run DIR ARGS...: `dbot analyze` of the checkpoints and labels in ARGS on 2000 test images
  local dir="$1"
  shift
  [[ -s "$dir/analysis.json" ]] && return 0
  "$dbot" analyze "$@" --images 2000 --out "$dir" "${precision[@]}"
}
