#!/usr/bin/env bash
# End-to-end checks of the dbot command: bad input gives one line naming the file/key and a non-zero exit;
# a short two-stage run on a Fashion-MNIST subset writes the documented run folder; eval works on it.
#   tests/e2e.sh <path to dbot> <work dir>
set -uo pipefail
dbot="$1"
work="$2"
source "$(dirname "$0")/cli_lib.sh"

# expect_error "<stderr substring>" dbot args...: non-zero exit, exactly one stderr line containing it.
expect_error() {
  local want="$1"
  shift
  "$dbot" "$@" >"$work/out" 2>"$work/err"
  local rc=$?
  if [[ $rc -eq 0 ]]; then fail "expected failure: $*"; return; fi
  if [[ $(wc -l <"$work/err") -ne 1 ]]; then fail "expected one stderr line for: $*"; cat "$work/err"; return; fi
  grep -qF -- "$want" "$work/err" || { fail "stderr lacks '$want': $(cat "$work/err")"; return; }
  echo "ok: error '$(cat "$work/err")'"
}

tiny=(--set data.path="$fmnist" --set model.name=vit_tiny_patch7_28 --set model.embed_dim=32 --set model.depth=2 --set model.num_heads=2
      --set mkd.decoder_embed_dim=16 --set mkd.decoder_depth=1 --set mkd.decoder_num_heads=2 --threads 2)
recipe="$src/recipes/fmnist_vit_tiny.yaml"

# --- bad input ---
printf 'optim:\n  lrr: 1\n' >"$work/bad.yaml"
expect_error "unknown recipe key 'optim.lrr'" pretrain --config "$work/bad.yaml" --output "$work/r0"
expect_error "unknown recipe key 'optim.nope'" pretrain --config "$recipe" --output "$work/r0" --set optim.nope=1
expect_error "image size 28 is not divisible by patch size 5" pretrain --config "$recipe" --output "$work/r0" \
  --set model.name=vit_tiny_patch5_28
expect_error "$work/nodata/train-images-idx3-ubyte.gz: not found" pretrain --config "$recipe" --output "$work/r0" \
  --set data.path="$work/nodata"
mkdir -p "$work/baddata"
cp "$fmnist"/*.gz "$work/baddata/" 2>/dev/null || { fail "Fashion-MNIST not installed at $fmnist"; }
if [[ -f "$work/baddata/train-labels-idx1-ubyte.gz" ]]; then
  # Wrong magic: a labels file where the images file should be.
  cp "$work/baddata/train-labels-idx1-ubyte.gz" "$work/baddata/train-images-idx3-ubyte.gz"
  expect_error "train-images-idx3-ubyte.gz: bad IDX magic 0x00000801 (expected 0x00000803)" pretrain \
    --config "$recipe" --output "$work/r0" --set data.path="$work/baddata"
  # Truncated gzip.
  head -c 100000 "$fmnist/train-images-idx3-ubyte.gz" >"$work/baddata/train-images-idx3-ubyte.gz"
  expect_error "train-images-idx3-ubyte.gz: truncated" pretrain --config "$recipe" --output "$work/r0" \
    --set data.path="$work/baddata"
fi
if ! nvidia-smi -L >/dev/null 2>&1; then  # "no CUDA GPU found" or "this build of dbot has no CUDA"
  expect_error "--device cuda: " pretrain --config "$recipe" --output "$work/r0" --device cuda
fi
expect_error "expected auto, cpu, cuda or cuda:N" pretrain --config "$recipe" --output "$work/r0" --device tpu
expect_error "$work/nowhere/train: no such directory" pretrain --config "$recipe" --output "$work/r0" \
  --set data.format=imagefolder --set data.path="$work/nowhere"
expect_error "data.format: unknown format 'lmdb'" pretrain --config "$recipe" --output "$work/r0" --set data.format=lmdb
printf 'does/not/exist.png 3\n' >"$work/list.txt"
expect_error "list.txt:1: no such image file" pretrain --config "$recipe" --output "$work/r0" \
  --set data.format=filelist --set data.path="$work/list.txt"
head -c 1000 "$src/tests/reference/golden.json" >"$work/notackpt.pt"
expect_error "notackpt.pt: not a readable torch.save file" eval knn --checkpoint "$work/notackpt.pt"
expect_error "notackpt.pt: not a readable torch.save file" pretrain --config "$recipe" --output "$work/r0" \
  --set mkd.teacher.init="$work/notackpt.pt"

# --- a short two-stage run ---
run="$work/run"
"$dbot" pretrain --config "$recipe" --output "$run" "${tiny[@]}" --set data.train_limit=512 --set data.test_limit=200 \
  --set "mkd.stage_epochs=[0, 1, 2]" --set optim.batch_size=64 --set train.log_every=4 --set train.checkpoint_every=5 \
  --set eval.linprobe_epochs=2 --precision fp32 >"$work/run.log" 2>&1 || { fail "pretrain failed"; cat "$work/run.log"; }
for f in config.yaml metrics.jsonl checkpoint-last.pt stage-1.pt stage-2.pt results.md results.json; do
  [[ -s "$run/$f" ]] || fail "run folder lacks $f"
done
ls "$run"/*.tmp >/dev/null 2>&1 && fail "temporary files left in $run"
grep -q '"type":"epoch"' "$run/metrics.jsonl" || fail "metrics.jsonl has no epoch lines"
grep -q 'lrr\|nope' "$run/config.yaml" && fail "config.yaml has junk"
grep -q 'embed_dim: 32' "$run/config.yaml" || fail "config.yaml lacks the override"
for stage in 0 1 2; do grep -q "\"stage\": $stage" "$run/results.json" || fail "results.json lacks stage $stage"; done
grep -q "| 2 | stage-2.pt:model |" "$run/results.md" || fail "results.md lacks the stage-2 row"
expect_error "exists: pass --resume" pretrain --config "$recipe" --output "$run" "${tiny[@]}"
"$dbot" eval knn --checkpoint "$run/stage-2.pt" --train-limit 512 --test-limit 200 >"$work/eval.log" 2>&1 ||
  fail "eval knn failed: $(cat "$work/eval.log")"
grep -q "top-1" "$work/eval.log" || fail "eval printed no accuracy"
cat "$work/eval.log"
# MAE's linear-probe protocol from the command line: a line per epoch, then the accuracy.
"$dbot" eval linprobe --checkpoint "$run/stage-2.pt" --train-limit 512 --test-limit 200 \
  --set eval.linprobe_protocol=mae --set eval.mae_epochs=2 --set eval.mae_warmup_epochs=1 \
  --set eval.mae_batch_size=128 >"$work/eval-mae.log" 2>&1 || fail "eval linprobe (mae) failed: $(cat "$work/eval-mae.log")"
grep -q "linear probe (MAE protocol) epoch 2/2" "$work/eval-mae.log" || fail "MAE probe printed no epoch lines"
grep -q "^linprobe .*top-1" "$work/eval-mae.log" || fail "MAE probe printed no accuracy"

# --- fine-tuning the stage-2 student (one epoch), and the analysis tools on the stage-0 and stage-2 networks ---
"$dbot" finetune --checkpoint "$run/stage-2.pt" --output "$work/ft" --set data.train_limit=512 --set data.test_limit=200 \
  --set finetune.epochs=1 --set finetune.warmup_epochs=0 --set finetune.batch_size=64 --threads 2 --precision fp32 \
  >"$work/ft.log" 2>&1 || { fail "finetune failed"; cat "$work/ft.log"; }
for f in config.yaml metrics.jsonl checkpoint-last.pt checkpoint-best.pt model.safetensors; do
  [[ -s "$work/ft/$f" ]] || fail "fine-tuning run folder lacks $f"
done
grep -q "fine-tuned: best top-1" "$work/ft.log" || fail "finetune printed no accuracy: $(cat "$work/ft.log")"
grep -q '"acc5"' "$work/ft/metrics.jsonl" || fail "finetune metrics.jsonl has no top-5"
expect_error "give --checkpoint FILE (a pretrained encoder) or --from-scratch" finetune --output "$work/ft2"
"$dbot" analyze --checkpoint "$run/stage-1.pt:teacher" --checkpoint "$run/stage-2.pt" --label "stage 0" \
  --label "stage 2" --images 64 --out "$work/analysis" --threads 2 >"$work/analyze.log" 2>&1 ||
  fail "analyze failed: $(cat "$work/analyze.log")"
for f in analysis.json attention_distance.png singular_values.png; do
  [[ -s "$work/analysis/$f" ]] || fail "analyze did not write $f: $(cat "$work/analyze.log")"
done
grep -q '"label": "stage 2"' "$work/analysis/analysis.json" || fail "analysis.json lacks the stage-2 label"
expect_error "--label is given 1 times for 2 checkpoints" analyze --checkpoint "$run/stage-2.pt" \
  --checkpoint "$run/stage-1.pt" --label one --out "$work/analysis2"
expect_error "nope.pt: no such file" analyze --checkpoint "$work/nope.pt" --out "$work/analysis2"

# --- an unlabeled folder of real image files (the test images: JPEG, PNG, WebP, PNM, BMP; RGB) ---
"$dbot" pretrain --config "$recipe" --output "$work/folder-run" "${tiny[@]}" --set data.format=folder \
  --set data.path="$src/tests/data/images" --set data.cache_dir=none --set data.skip_bad=true --set model.in_chans=3 \
  --set "data.mean=[0.5, 0.5, 0.5]" --set "data.std=[0.25, 0.25, 0.25]" --set "mkd.stage_epochs=[0, 1, 2]" \
  --set optim.batch_size=8 --precision fp32 >"$work/folder.log" 2>&1 || { fail "pretrain on a folder failed"; cat "$work/folder.log"; }
grep -qE "tests/data/images: [0-9]+ images" "$work/folder.log" || fail "folder run did not describe its data: $(head -3 "$work/folder.log")"
grep -q "evaluation skipped: data.format folder has no labels" "$work/folder.log" || fail "folder run did not skip evaluation"
[[ -s "$work/folder-run/stage-2.pt" ]] || fail "folder run wrote no stage-2.pt"

# --- a pretrained teacher of another width, depth and patch size: timm weights saved by Python's torch.save
#     (tests/reference/make_teacher_golden.py); stage 1 predicts its 24 features, stage 2 the student's 32 ---
teacher_file="$src/tests/data/teachers/timm_w24_d3_p4.pth"
teacher_run() {  # teacher_run NAME FILE [flags...]: pretraining from a teacher file, its log in $work/NAME.log
  local name="$1" file="$2"
  shift 2
  "$dbot" pretrain --config "$recipe" --output "$work/$name" "${tiny[@]}" --set data.train_limit=256 \
    --set "mkd.stage_epochs=[0, 1, 2]" --set optim.batch_size=64 --set mkd.teacher.init="$file" --no-eval \
    --precision fp32 "$@" >"$work/$name.log" 2>&1 || { fail "pretrain from $file failed"; cat "$work/$name.log"; }
}
teacher_run teacher-run "$teacher_file" --set mkd.teacher.num_heads=2
grep -qF "'model' wrapper, 'module.' prefix: ViT 24 wide, 3 blocks, 2 heads, patch 4, 6x6 grid, 1 channel(s); ignored 2: head.bias, head.weight" \
  "$work/teacher-run.log" || fail "the teacher file was not described: $(head -3 "$work/teacher-run.log")"
"$dbot" export --checkpoint "$work/teacher-run/stage-1.pt" --part teacher --out "$work/teacher.safetensors" \
  >"$work/export-teacher.log" 2>&1 || fail "export of the foreign teacher failed: $(cat "$work/export-teacher.log")"
grep -qaF 'embed_dim\":24' "$work/teacher.safetensors" || fail "the exported teacher is not 24 wide"
[[ -s "$work/teacher-run/stage-2.pt" ]] || fail "the teacher run wrote no stage-2.pt"

# --- a CLIP image tower from an open_clip checkpoint (tests/reference/make_clip_teacher_golden.py): its target
#     after ln_post and proj (24 features), the cosine loss; stage 2 back to dBOT's own target ---
teacher_run clip-run "$src/tests/data/teachers/openclip_w32_d2_p4.pt" --set mkd.teacher.num_heads=2
grep -qF "OpenAI/open_clip CLIP names (image tower): ViT 32 wide, 2 blocks, 2 heads, patch 4, 4x4 grid, 1 channel(s), CLIP tower (ln_pre, QuickGELU, proj to 24); ignored 1: the text tower (6 tensors)" \
  "$work/clip-run.log" || fail "the CLIP tower was not described: $(head -4 "$work/clip-run.log")"
grep -qF "loss (stage 1): 1 - cosine similarity, masked patches (CLS dropped)" "$work/clip-run.log" ||
  fail "the CLIP teacher's loss was not announced: $(head -4 "$work/clip-run.log")"
[[ -s "$work/clip-run/stage-2.pt" ]] || fail "the CLIP-teacher run wrote no stage-2.pt"

# --- the step benchmark runs the real train_step and prints its machine-readable line ---
"$dbot" bench step --config "$recipe" "${tiny[@]}" --steps 2 --warmup 1 --precision fp32 --device cpu \
  --profile "$work/trace.json" >"$work/bench.log" 2>&1 || fail "bench step failed: $(cat "$work/bench.log")"
grep -q "^dbot-bench: ms_per_step=.* gemm_floor_ms=" "$work/bench.log" || fail "bench step printed no dbot-bench line"
grep -q "^GEMM floor (the step's matrix products back to back, fp32): " "$work/bench.log" ||
  fail "bench step printed no GEMM floor: $(cat "$work/bench.log")"
# --profile wrote a trace of the two steps that bench/profile_summary.py tabulates per operator.
python3 "$src/bench/profile_summary.py" "$work/trace.json" --steps 2 >"$work/profile.txt" 2>&1 ||
  fail "profile_summary failed: $(cat "$work/profile.txt")"
grep -q "^| aten::mm |" "$work/profile.txt" || fail "profile has no aten::mm row: $(cat "$work/profile.txt")"
grep -q "| vit_tiny_patch7_28 | 28 | 128 |" "$work/bench.log" || fail "bench step table: $(cat "$work/bench.log")"

# --- the data benchmark (decode + train transform through the Loader) prints its machine-readable line ---
mkdir -p "$work/bench-data/train/a" "$work/bench-data/train/b"
cp "$src"/tests/data/images/{baseline,progressive,subsampling444}.jpg "$work/bench-data/train/a/"
cp "$src"/tests/data/images/{rgb,gray,palette}.png "$work/bench-data/train/b/"
"$dbot" bench data --path "$work/bench-data" --size 32 --images 8 --batch 2 --workers 2 >"$work/bench-data.log" 2>&1 ||
  fail "bench data failed: $(cat "$work/bench-data.log")"
grep -q "^dbot-bench-data: workers=2 images_per_s=" "$work/bench-data.log" || fail "bench data: $(cat "$work/bench-data.log")"

# --- weights out: export (timm file, Hugging Face folder), extract; and back in (eval on the export) ---
frun="$work/folder-run/stage-2.pt"
"$dbot" export --checkpoint "$frun" --out "$work/export/encoder.safetensors" >"$work/export.log" 2>&1 &&
  "$dbot" export --checkpoint "$frun" --out "$work/export/hf" --layout hf >>"$work/export.log" 2>&1 &&
  "$dbot" export --checkpoint "$run/stage-2.pt" --out "$work/export/run.safetensors" >>"$work/export.log" 2>&1 ||
  fail "export failed: $(cat "$work/export.log")"
"$dbot" extract --checkpoint "$work/export/encoder.safetensors" --data "$work/bench-data" --set data.format=imagefolder \
  --out "$work/export/features.safetensors" --threads 2 >"$work/extract.log" 2>&1 ||
  fail "extract failed: $(cat "$work/extract.log")"
grep -q "extracted 6 x 64 features (cls+mean)" "$work/extract.log" || fail "extract: $(cat "$work/extract.log")"
"$dbot" eval knn --checkpoint "$work/export/run.safetensors" --train-limit 512 --test-limit 200 >"$work/eval-st.log" 2>&1 ||
  fail "eval on an exported file failed: $(cat "$work/eval-st.log")"
[[ "$(sed 's/.*top-1//' "$work/eval.log")" == "$(sed 's/.*top-1//' "$work/eval-st.log")" ]] ||
  fail "eval on the export differs from eval on the checkpoint: $(cat "$work/eval.log" "$work/eval-st.log")"
expect_error "the Hugging Face layout holds an encoder only" export --checkpoint "$frun" --out "$work/x" --layout hf --part student
head -c 300 "$work/export/encoder.safetensors" >"$work/truncated.safetensors"
expect_error "truncated.safetensors: header size" eval knn --checkpoint "$work/truncated.safetensors"

# --- Python interop: torch.load + timm strict load; exports into timm and transformers; extract = timm ---
if python3 -c 'import torch' 2>/dev/null; then
  python3 "$src/tests/reference/check_checkpoint.py" "$run" || fail "Python torch.load check failed"
  python3 "$src/tests/reference/check_finetune.py" "$work/ft" || fail "fine-tuned model check (timm strict load) failed"
  # A released-style file with an argparse.Namespace (LibTorch's Unpickler refuses it; dbot reads it), and the
  # same weights through tools/convert_checkpoint.py.
  python3 -c "import argparse, sys, torch; sd = torch.load(sys.argv[1], weights_only=True)['model']
torch.save({'model': sd, 'args': argparse.Namespace(lr=1e-3), 'epoch': 3}, sys.argv[2])" "$teacher_file" "$work/ns.pth"
  # The run's TensorBoard events, read by the tensorboard package: the last step loss equals metrics.jsonl's.
  if ! python3 -c 'import tensorboard' 2>/dev/null; then
    [[ "${DBOT_REQUIRE_PYTHON_TORCH:-0}" == 1 ]] && fail "python3 has no tensorboard (scripts/install-deps.sh --pypi)"
  elif ! python3 - "$run" <<'PY'; then
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
run = sys.argv[1]
steps = [json.loads(l) for l in open(f"{run}/metrics.jsonl") if '"type":"step"' in l]
acc = EventAccumulator(f"{run}/tensorboard")
acc.Reload()
loss = acc.Scalars("step/loss")
assert len(loss) == len(steps), (len(loss), len(steps))
assert loss[-1].step == steps[-1]["global_iteration"] and abs(loss[-1].value - steps[-1]["loss"]) < 1e-6, loss[-1]
print(f"tensorboard: {len(loss)} step/loss scalars, last {loss[-1].value:.6f} at step {loss[-1].step}")
PY
    fail "TensorBoard events check failed"
  fi
  teacher_run ns-run "$work/ns.pth" --set mkd.teacher.num_heads=2 --stop-after 1
  grep -qF "ns.pth: torch.save dict, 'model' wrapper, 'module.' prefix: ViT 24 wide" "$work/ns-run.log" || fail "ns.pth: $(head -3 "$work/ns-run.log")"
  python3 "$src/tools/convert_checkpoint.py" "$teacher_file" "$work/converted.safetensors" --num-heads 2 \
    >"$work/convert.log" 2>&1 || fail "convert_checkpoint failed: $(cat "$work/convert.log")"
  teacher_run converted-run "$work/converted.safetensors" --stop-after 1
  grep -qF "converted.safetensors: safetensors (dbot.model metadata): ViT 24 wide, 3 blocks, 2 heads" "$work/converted-run.log" ||
    fail "converted teacher: $(head -3 "$work/converted-run.log")"
  # OpenAI releases CLIP as TorchScript archives: dbot names them and points at the converter, which reads them.
  python3 - "$src/tests/data/teachers/openclip_w32_d2_p4.pt" "$work/clip-jit.pt" <<'PY' 2>/dev/null || fail "making a TorchScript CLIP failed"
import sys, torch
class Holder(torch.nn.Module):  # the CLIP model's tensors with their names, as a traced module holds them
    def forward(self, x):
        return x
root = Holder()
for name, t in torch.load(sys.argv[1], weights_only=True)["state_dict"].items():
    *path, leaf = name[len("module."):].split(".")
    m = root
    for p in path:
        if not hasattr(m, p):
            m.add_module(p, Holder())
        m = getattr(m, p)
    m.register_parameter(leaf, torch.nn.Parameter(t, requires_grad=False))
torch.jit.trace(root, torch.zeros(1)).save(sys.argv[2])
PY
  expect_error "clip-jit.pt: a TorchScript archive (as OpenAI's CLIP releases)" eval knn --checkpoint "$work/clip-jit.pt"
  python3 "$src/tools/convert_checkpoint.py" "$work/clip-jit.pt" "$work/clip.safetensors" --num-heads 2 \
    >"$work/convert-clip.log" 2>&1 || fail "convert_checkpoint of a TorchScript CLIP failed: $(cat "$work/convert-clip.log")"
  teacher_run clip-converted-run "$work/clip.safetensors" --stop-after 1
  grep -qF "clip.safetensors: safetensors (dbot.model metadata), OpenAI/open_clip CLIP names: ViT 32 wide, 2 blocks, 2 heads, patch 4, 4x4 grid, 1 channel(s), CLIP tower (ln_pre, QuickGELU, proj to 24)" \
    "$work/clip-converted-run.log" || fail "converted CLIP teacher: $(head -3 "$work/clip-converted-run.log")"
  python3 "$src/tests/reference/check_export.py" "$work/export/encoder.safetensors" "$work/export/hf" \
    "$work/export/features.safetensors" 2>&1 | grep -v "^Loading weights" || fail "Python export check failed"
elif [[ "${DBOT_REQUIRE_PYTHON_TORCH:-0}" == 1 ]]; then
  fail "python3 has no torch, but DBOT_REQUIRE_PYTHON_TORCH=1"
else
  echo "note: python3 has no torch; skipped the torch.load interop check"
fi

if ((fails)); then
  echo "$fails e2e check(s) failed"
  exit 1
fi
echo "e2e: all checks passed"
