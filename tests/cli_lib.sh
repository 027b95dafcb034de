# Shared by the command-line tests (e2e.sh, kill_resume.sh): sourced after `dbot` and `work` are set.
# Sets src (the repository) and fmnist (the dataset), makes an empty work folder, and defines fail.
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fmnist="${DBOT_FMNIST_DIR:-/usr/share/datasets/fashion-mnist}"
rm -rf "$work" && mkdir -p "$work"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
