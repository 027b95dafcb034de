#!/usr/bin/env bash
# Teacher convergence on Fashion-MNIST (issue 8; results in docs/RESULTS.md): dBOT chains of the demo recipe
# (recipes/fmnist_vit_tiny.yaml: two stages of 2 epochs) from four clearly different stage-0 teachers, to test
# the paper's claim that the stages forget where they started (its spread across teachers: 2.24 -> 0.04 points).
#   random      the recipe's random network
#   zeroblock   a teacher with zero blocks (mkd.teacher_depth=0: patch embedding, position table, final norm)
#   supervised  the same ViT trained from scratch with labels (dbot finetune --from-scratch, fmnist_finetune.yaml)
#   mae         the same ViT pretrained by MAE (mkd.target=pixels, one stage of 2 epochs)
# Every run uses the first TRAIN_LIMIT training images (default 20000: a third of the demo's compute); PRECISION and
# EXTRA as scripts/fmnist_runs.sh says (a smoke test: TRAIN_LIMIT=512 EXTRA="--set data.test_limit=256").
# Prints per-stage k-NN / linear probe for every chain and their spread (max - min) across teachers; runs
# `dbot analyze` once per stage with the chains overlaid (at stage 0 without the zero-block teacher: it has no
# blocks). Every step resumes and finished runs are skipped.
#   scripts/teachers_fmnist.sh [OUT=runs/teachers] [DBOT=build-pypi/dbot]
set -euo pipefail
out="${1:-runs/teachers}"
dbot="${2:-build-pypi/dbot}"
TRAIN_LIMIT="${TRAIN_LIMIT:-20000}"
source "$(dirname "$0")/fmnist_runs.sh"
mkdir -p "$out"

# The two trained teachers.
pretrain_run "$out/mae-teacher" --set mkd.target=pixels --set "mkd.stage_epochs=[0, 2]"
finetune_run "$out/supervised-teacher" --from-scratch

names=(random zeroblock supervised mae)
declare -A teacher=(
  [random]=""
  [zeroblock]="--set mkd.teacher_depth=0"
  [supervised]="--set mkd.teacher.init=$out/supervised-teacher/model.safetensors"
  [mae]="--set mkd.teacher.init=$out/mae-teacher/stage-1.pt"
)
for name in "${names[@]}"; do
  read -r -a args <<<"${teacher[$name]}"
  pretrain_run "$out/chain-$name" "${args[@]}"
done

for stage in 0 1 2; do
  ckpts=()
  for name in "${names[@]}"; do
    if ((stage == 0)); then
      [[ $name == zeroblock ]] && continue  # no blocks: no attention maps or block outputs to analyze
      ckpts+=(--checkpoint "$out/chain-$name/stage-1.pt:teacher")
    else
      ckpts+=(--checkpoint "$out/chain-$name/stage-$stage.pt")
    fi
    ckpts+=(--label "$name teacher, stage $stage")
  done
  analyze_run "$out/analysis-stage$stage" "${ckpts[@]}"
done

echo
python3 - "$out" "${names[@]}" <<'PY'
import json, sys
out, names = sys.argv[1], sys.argv[2:]
stages = {n: json.load(open(f"{out}/chain-{n}/results.json"))["stages"] for n in names}
print("| teacher | " + " | ".join(f"stage {s['stage']} k-NN / linear (%)" for s in stages[names[0]]) + " |")
print("|---|" + "---|" * len(stages[names[0]]))
for n in names:
    print(f"| {n} | " + " | ".join(f"{100 * s['knn']:.2f} / {100 * s['linprobe']:.2f}" for s in stages[n]) + " |")
spread = lambda k, i: 100 * (max(stages[n][i][k] for n in names) - min(stages[n][i][k] for n in names))
print("| spread (max - min) | " +
      " | ".join(f"{spread('knn', i):.2f} / {spread('linprobe', i):.2f}" for i in range(len(stages[names[0]]))) + " |")
PY
