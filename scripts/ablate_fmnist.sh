#!/usr/bin/env bash
# Ablations on Fashion-MNIST (issue 8; results in docs/RESULTS.md), each a variant of the demo recipe
# (recipes/fmnist_vit_tiny.yaml: 2 stages of 2 epochs, mask 0.5) at the same total budget of 4 epochs:
#   base          the recipe as it is (the official rule: the student is re-initialized at each switch)
#   continue      mkd.reinit_student=false: the student continues from its own weights
#   mask25/mask75 mkd.mask_ratio 0.25 / 0.75
#   stages1x4     one stage of 4 epochs      stages4x1   four stages of 1 epoch
# Prints one row per variant: k-NN / linear probe of its last stage and of every stage. Every run resumes,
# so the script can be re-run after a stop; a finished run is not repeated.
#   scripts/ablate_fmnist.sh [OUT=runs/ablate] [DBOT=build-pypi/dbot]
# Environment: ONLY (space-separated variant names), and PRECISION, TRAIN_LIMIT, EXTRA as scripts/fmnist_runs.sh
# says (a short smoke test: TRAIN_LIMIT=512 EXTRA="--set data.test_limit=256").
set -euo pipefail
out="${1:-runs/ablate}"
dbot="${2:-build-pypi/dbot}"
source "$(dirname "$0")/fmnist_runs.sh"
declare -A sets=(
  [base]=""
  [continue]="--set mkd.reinit_student=false"
  [mask25]="--set mkd.mask_ratio=0.25"
  [mask75]="--set mkd.mask_ratio=0.75"
  [stages1x4]="--set mkd.stage_epochs=[0,4]"
  [stages4x1]="--set mkd.stage_epochs=[0,1,2,3,4]"
)
order=(base continue mask25 mask75 stages1x4 stages4x1)
[[ -n "${ONLY:-}" ]] && read -r -a order <<<"$ONLY"
mkdir -p "$out"
for name in "${order[@]}"; do
  [[ -v "sets[$name]" ]] || { echo "ablate_fmnist.sh: unknown variant '$name' (${!sets[*]})" >&2; exit 2; }
  read -r -a args <<<"${sets[$name]}"
  pretrain_run "$out/$name" "${args[@]}"
done

echo
echo "| variant | last stage k-NN (%) | last stage linear probe (%) | every stage (k-NN / linear) |"
echo "|---|---|---|---|"
for name in "${order[@]}"; do
  python3 - "$out/$name/results.json" "$name" <<'PY'
import json, sys
stages = json.load(open(sys.argv[1]))["stages"]
pct = lambda s, k: f"{100 * s[k]:.2f}"  # results.json holds fractions; the tables show top-1 in %
every = ", ".join(f"{s['stage']}: {pct(s, 'knn')} / {pct(s, 'linprobe')}" for s in stages)
print(f"| {sys.argv[2]} | {pct(stages[-1], 'knn')} | {pct(stages[-1], 'linprobe')} | {every} |")
PY
done
