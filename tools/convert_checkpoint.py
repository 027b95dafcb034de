#!/usr/bin/env python3
"""Converts a released ViT checkpoint into a safetensors file dbot reads without guessing.

    python3 tools/convert_checkpoint.py IN.pth OUT.safetensors [--key KEY] [--num-heads H] [--keep-decoder]

IN: a `.pth`/`.pt` of timm, MAE, DeiT, DINO or dBOT, in any torch.save format (the legacy pre-1.6 one
included), holding OrderedDict state dicts and, often, an `argparse.Namespace` of training arguments.
dbot reads most such files directly (mkd.teacher.init, mkd.student.init, dbot eval/extract); this tool is
for the rest (the legacy format, other Python classes) and for handing the weights on as safetensors.

What it does, as dbot's own reader (src/dbot/train/pretrained.h):
- the state dict is found under --key, else under "state_dict", "model" or "teacher" (the first present);
- "module." and "backbone." prefixes are stripped;
- classification heads (head., head_dist., fc_norm., pre_logits.) are dropped, and the MAE/dBOT decoder
  (decoder_*, mask_token) unless --keep-decoder; what was dropped is printed;
- a CLIP image tower or a distilled DeiT (dist_token) is refused;
- the architecture goes into the "dbot.model" metadata (width, depth, patch, image size, channels, MLP
  ratio from the shapes; heads from --num-heads, else timm's sizes: 192->3, 384->6, 768->12, 1024->16,
  1280->16, else width / 64).
Loading uses torch.load(weights_only=True) with argparse.Namespace allowed; a file that needs any other
class fails with torch's message: pass --trust to unpickle it fully (only for files you trust).
"""
import argparse
import json
import math
import sys

import torch

WRAPPERS = ("state_dict", "model", "teacher")
PREFIXES = ("module.", "backbone.")
HEADS = ("head.", "head_dist.", "fc_norm.", "pre_logits.")
REGISTRY_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}


def fail(msg):
    print(f"convert_checkpoint: error: {msg}", file=sys.stderr)
    sys.exit(1)


def load(path, trust):
    torch.serialization.add_safe_globals([argparse.Namespace])
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as e:  # torch names the class it refused
        fail(f"{path}: {str(e).splitlines()[0]} (pass --trust to unpickle it fully, for files you trust)")


def state_dict_of(obj, key, path):
    if not isinstance(obj, dict):
        fail(f"{path}: holds a {type(obj).__name__}, not a dict of tensors")
    keys = [key] if key else [k for k in WRAPPERS if isinstance(obj.get(k), dict)]
    if key and not isinstance(obj.get(key), dict):
        fail(f"{path}: no dict under '{key}' (top-level keys: {sorted(map(str, obj))})")
    if keys:
        obj = obj[keys[0]]
        print(f"state dict under '{keys[0]}'")
    out = {}
    for name, t in obj.items():
        if not torch.is_tensor(t):
            continue
        stripped = True
        while stripped:
            stripped = False
            for p in PREFIXES:
                if name.startswith(p):
                    name, stripped = name[len(p):], True
        out[name] = t
    if not out:
        fail(f"{path}: no tensors found")
    return out


def architecture(state, num_heads, path):
    if "class_embedding" in state or "ln_pre.weight" in state:
        fail(f"{path}: a CLIP image tower: not supported as a dbot encoder")
    if "dist_token" in state:
        fail(f"{path}: a distilled DeiT (dist_token): not supported; use the non-distilled model")
    for need in ("patch_embed.proj.weight", "pos_embed", "cls_token"):
        if need not in state:
            fail(f"{path}: missing tensor '{need}'")
    d, c, p, _ = state["patch_embed.proj.weight"].shape
    grid = math.isqrt(state["pos_embed"].shape[1] - 1)
    if grid * grid != state["pos_embed"].shape[1] - 1:
        fail(f"{path}: pos_embed is not a CLS row and a square grid")
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    heads = num_heads or REGISTRY_HEADS.get(d) or (d // 64 if d % 64 == 0 else 0)
    if not heads:
        fail(f"{path}: the number of heads of a {d}-wide encoder cannot be inferred: pass --num-heads")
    mlp = state["blocks.0.mlp.fc1.weight"].shape[0] / d if depth else 4.0
    return {"img_size": grid * p, "patch_size": p, "in_chans": c, "embed_dim": d, "depth": depth,
            "num_heads": heads, "mlp_ratio": mlp}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--key", help="the dict holding the state dict (default: state_dict, model or teacher)")
    ap.add_argument("--num-heads", type=int, default=0, help="attention heads (default: from the width)")
    ap.add_argument("--keep-decoder", action="store_true", help="keep decoder_* and mask_token (student init)")
    ap.add_argument("--trust", action="store_true", help="unpickle any class (weights_only=False)")
    a = ap.parse_args()
    from safetensors.torch import save_file

    state = state_dict_of(load(a.input, a.trust), a.key, a.input)
    dropped = sorted(k for k in state if k.startswith(HEADS) or
                     (not a.keep_decoder and (k.startswith("decoder_") or k == "mask_token")))
    for k in dropped:
        del state[k]
    arch = architecture(state, a.num_heads, a.input)
    tensors = {k: v.detach().contiguous() for k, v in state.items()}
    meta = {"format": "pt", "dbot.model": json.dumps(arch, separators=(",", ":")), "dbot.source": a.input}
    save_file(tensors, a.output, metadata=meta)
    print(f"wrote {a.output}: {len(tensors)} tensors, {json.dumps(arch)}")
    if dropped:
        print(f"dropped {len(dropped)}: {', '.join(dropped)}")


if __name__ == "__main__":
    main()
