#!/usr/bin/env python3
"""Converts a released ViT checkpoint into a safetensors file dbot reads without guessing.

    python3 tools/convert_checkpoint.py IN.pth OUT.safetensors [--key KEY] [--num-heads H] [--keep-decoder]

IN: a `.pth`/`.pt` of timm, MAE, DeiT, DINO or dBOT, in any torch.save format (the legacy pre-1.6 one
included), holding OrderedDict state dicts and, often, an `argparse.Namespace` of training arguments; or a
CLIP model of OpenAI (their releases are TorchScript archives, read with torch.jit.load) or open_clip.
dbot reads most such files directly (mkd.teacher.init, mkd.student.init, dbot eval/extract); this tool is
for the rest (the legacy format, other Python classes) and for handing the weights on as safetensors.

What it does, as dbot's own reader (src/dbot/train/pretrained.h):
- the state dict is found under --key, else under "state_dict", "model" or "teacher" (the first present);
- "module." and "backbone." prefixes are stripped;
- classification heads (head., head_dist., fc_norm., pre_logits.) are dropped, and the MAE/dBOT decoder
  (decoder_*, mask_token) unless --keep-decoder; what was dropped is printed;
- a CLIP model or image tower with OpenAI / open_clip names keeps them (dbot maps them, model/layouts.h):
  its "visual." tower is taken, the text tower dropped; the metadata marks it a CLIP tower (ln_pre, LayerNorm
  eps 1e-5, proj) with --act's activation (default quick_gelu: OpenAI's and open_clip's *-quickgelu models;
  gelu for open_clip's others);
- a distilled DeiT (dist_token) is refused;
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
    import zipfile
    if zipfile.is_zipfile(path) and any(n.endswith("/constants.pkl") for n in zipfile.ZipFile(path).namelist()):
        print("a TorchScript archive: torch.jit.load")  # OpenAI's CLIP releases
        return torch.jit.load(path, map_location="cpu").state_dict()
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


def heads_of(d, num_heads, path):
    heads = num_heads or REGISTRY_HEADS.get(d) or (d // 64 if d % 64 == 0 else 0)
    if not heads:
        fail(f"{path}: the number of heads of a {d}-wide encoder cannot be inferred: pass --num-heads")
    return heads


def clip_tower(state):
    """The image tower of an OpenAI / open_clip CLIP model (names kept, "visual." removed), or None."""
    if "visual.class_embedding" in state:
        tower = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
        print(f"CLIP model: the image tower taken, {len(state) - len(tower)} text-tower tensors dropped")
        return tower
    return state if "class_embedding" in state else None


def clip_architecture(tower, num_heads, act, path):
    for need in ("conv1.weight", "positional_embedding", "ln_pre.weight", "ln_post.weight"):
        if need not in tower:
            fail(f"{path}: a CLIP tower without '{need}'")
    d, c, p, _ = tower["conv1.weight"].shape
    tokens = tower["positional_embedding"].shape[0]
    grid = math.isqrt(tokens - 1)
    if grid * grid != tokens - 1:
        fail(f"{path}: positional_embedding is not a CLS row and a square grid")
    depth = len({k.split(".")[2] for k in tower if k.startswith("transformer.resblocks.")})
    mlp = tower["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / d if depth else 4.0
    return {"img_size": grid * p, "patch_size": p, "in_chans": c, "embed_dim": d, "depth": depth,
            "num_heads": heads_of(d, num_heads, path), "mlp_ratio": mlp, "pre_norm": True,
            "quick_gelu": act == "quick_gelu", "norm_eps": 1e-5,
            "proj_dim": tower["proj"].shape[1] if "proj" in tower else 0}


def architecture(state, num_heads, path):
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
    mlp = state["blocks.0.mlp.fc1.weight"].shape[0] / d if depth else 4.0
    return {"img_size": grid * p, "patch_size": p, "in_chans": c, "embed_dim": d, "depth": depth,
            "num_heads": heads_of(d, num_heads, path), "mlp_ratio": mlp}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--key", help="the dict holding the state dict (default: state_dict, model or teacher)")
    ap.add_argument("--num-heads", type=int, default=0, help="attention heads (default: from the width)")
    ap.add_argument("--keep-decoder", action="store_true", help="keep decoder_* and mask_token (student init)")
    ap.add_argument("--trust", action="store_true", help="unpickle any class (weights_only=False)")
    ap.add_argument("--act", choices=("quick_gelu", "gelu"), default="quick_gelu",
                    help="a CLIP tower's MLP activation (default quick_gelu, OpenAI's)")
    a = ap.parse_args()
    from safetensors.torch import save_file

    state = state_dict_of(load(a.input, a.trust), a.key, a.input)
    tower = clip_tower(state)
    if tower is not None:
        arch = clip_architecture(tower, a.num_heads, a.act, a.input)
        meta = {"format": "pt", "dbot.model": json.dumps(arch, separators=(",", ":")), "dbot.source": a.input}
        save_file({k: v.detach().contiguous() for k, v in tower.items()}, a.output, metadata=meta)
        print(f"wrote {a.output}: a CLIP image tower, {len(tower)} tensors, {json.dumps(arch)}")
        return
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
