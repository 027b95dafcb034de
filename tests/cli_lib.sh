# Shared by the command-line tests (e2e.sh, kill_resume.sh): sourced after `dbot` and `work` are set.
# Sets src (the repository), fmnist (the dataset) and tiny (the demo recipe on a 2-block width-32 ViT and 768
# training images: seconds per run), makes an empty work folder, and defines fail.
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fmnist="${DBOT_FMNIST_DIR:-/usr/share/datasets/fashion-mnist}"
tiny=(--config "$src/recipes/fmnist_vit_tiny.yaml" --set data.path="$fmnist" --set model.name=vit_tiny_patch7_28
      --set model.embed_dim=32 --set model.depth=2 --set model.num_heads=2 --set mkd.decoder_embed_dim=16
      --set mkd.decoder_depth=1 --set mkd.decoder_num_heads=2 --set data.train_limit=768)
rm -rf "$work" && mkdir -p "$work"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
