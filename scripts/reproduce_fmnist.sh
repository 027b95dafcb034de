#!/usr/bin/env bash
# The reproduction on Fashion-MNIST (issue 8; results in docs/RESULTS.md): dBOT's stages 0 to 3 from a random
# teacher (the demo recipe with a third stage of 2 epochs: stages 1 and 2 are the demo's, the lr schedule restarts per
# stage), the MAE pixel-target baseline at equal total epochs (4: against stage 2) and supervised training from
# scratch, each fine-tuned with recipes/fmnist_finetune.yaml; MAE for 2 and 6 epochs too (equal epochs per stage,
# equal total epochs with stage 3: k-NN / linear probe only); the two analysis tools on every pretrained network.
# Every step resumes, so the script can be re-run after a stop.
# PRECISION, TRAIN_LIMIT and EXTRA as scripts/fmnist_runs.sh says.
#   scripts/reproduce_fmnist.sh [OUT=runs/reproduce] [DBOT=build-pypi/dbot]
set -euo pipefail
out="${1:-runs/reproduce}"
dbot="${2:-build-pypi/dbot}"
source "$(dirname "$0")/fmnist_runs.sh"
mkdir -p "$out"

pretrain_run "$out/dbot" --set "mkd.stage_epochs=[0, 2, 4, 6]"
pretrain_run "$out/mae" --set mkd.target=pixels --set "mkd.stage_epochs=[0, 4]"
pretrain_run "$out/mae-2ep" --set mkd.target=pixels --set "mkd.stage_epochs=[0, 2]"
pretrain_run "$out/mae-6ep" --set mkd.target=pixels --set "mkd.stage_epochs=[0, 6]"

finetune_run "$out/ft-stage0" --checkpoint "$out/dbot/stage-1.pt" --which teacher
finetune_run "$out/ft-stage1" --checkpoint "$out/dbot/stage-1.pt"
finetune_run "$out/ft-stage2" --checkpoint "$out/dbot/stage-2.pt"
finetune_run "$out/ft-stage3" --checkpoint "$out/dbot/stage-3.pt"
finetune_run "$out/ft-mae" --checkpoint "$out/mae/stage-1.pt"
finetune_run "$out/ft-scratch" --from-scratch

analyze_run "$out/analysis" --checkpoint "$out/dbot/stage-1.pt:teacher" --checkpoint "$out/dbot/stage-1.pt" \
  --checkpoint "$out/dbot/stage-2.pt" --checkpoint "$out/dbot/stage-3.pt" --checkpoint "$out/mae/stage-1.pt" \
  --label "stage 0 (random)" --label "dBOT stage 1" --label "dBOT stage 2" --label "dBOT stage 3" \
  --label "MAE (4 epochs)"

echo
echo "| network | fine-tuning top-1 (best) | last top-1 | top-5 |"
echo "|---|---|---|---|"
for name in stage0 stage1 stage2 stage3 mae scratch; do
  python3 - "$out/ft-$name/metrics.jsonl" "$name" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"type":"epoch"' in l]
last = rows[-1]
print(f"| {sys.argv[2]} | {max(r['acc1'] for r in rows):.2f} | {last['acc1']:.2f} | {last['acc5']:.2f} |")
PY
done
echo
for run in dbot mae-2ep mae mae-6ep; do  # mae: 4 epochs
  echo "### $run"
  cat "$out/$run/results.md"
done
