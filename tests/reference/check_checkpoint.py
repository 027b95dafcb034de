#!/usr/bin/env python3
"""Reads a dbot run folder's checkpoints with Python's torch.load and checks names and values.

Usage: python3 tests/reference/check_checkpoint.py RUN_DIR   (needs stage-1.pt and stage-2.pt)

Checks: each file is a plain dict with the documented keys; the student encoder loads strictly into timm's
VisionTransformer (timm names); the decoder uses the official dBOT names; pos_embed is MAE's fixed sin-cos
table; the stage-2 teacher equals the stage-1 student's encoder; the optimizer state is keyed by parameter
name. Exits non-zero with a message on the first failure.
"""
import json
import math
import os
import sys
from functools import partial

import torch

KEYS = {"format_version", "model", "teacher", "stage", "epoch", "iteration", "rng", "config"}


def fail(msg):
    print(f"check_checkpoint: FAIL: {msg}")
    sys.exit(1)


def load(path):
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # very old torch without weights_only
        ckpt = torch.load(path, map_location="cpu")
    if type(ckpt) is not dict:
        fail(f"{path}: expected a plain dict, got {type(ckpt)}")
    missing = KEYS - set(ckpt)
    if missing:
        fail(f"{path}: missing keys {sorted(missing)}")
    if ckpt["format_version"] != 3:
        fail(f"{path}: format_version {ckpt['format_version']}")
    for key in ("model_arch", "teacher_arch"):  # the two encoders' architectures, JSON
        arch = json.loads(ckpt[key])
        if not all(isinstance(arch.get(k), int) for k in ("embed_dim", "depth", "num_heads", "patch_size")):
            fail(f"{path}: {key} is not an architecture: {ckpt[key]}")
    return ckpt


def sincos(dim, grid):
    """MAE's get_2d_sincos_pos_embed with a zero CLS row, float64 -> float32."""
    omega = [1.0 / 10000 ** (k / (dim / 4)) for k in range(dim // 4)]
    rows = [[0.0] * dim]
    for r in range(grid):
        for c in range(grid):
            row = [math.sin(c * w) for w in omega] + [math.cos(c * w) for w in omega]
            row += [math.sin(r * w) for w in omega] + [math.cos(r * w) for w in omega]
            rows.append(row)
    return torch.tensor(rows, dtype=torch.float64).float()


def main(run):
    s1 = load(os.path.join(run, "stage-1.pt"))
    s2 = load(os.path.join(run, "stage-2.pt"))
    last = load(os.path.join(run, "checkpoint-last.pt"))
    if (s1["stage"], s2["stage"]) != (1, 2):
        fail(f"stages are {s1['stage']}, {s2['stage']}")
    model = s2["model"]
    decoder_names = {"mask_token", "decoder_pos_embed"}
    for prefix in ("decoder_embed.", "decoder_blocks.0.norm1.", "decoder_norm.", "decoder_predp."):
        if not any(k.startswith(prefix) for k in model):
            fail(f"no decoder tensor named {prefix}*")
    encoder = {k: v for k, v in model.items() if k not in decoder_names and not k.startswith("decoder_")}

    dim = encoder["cls_token"].shape[-1]
    patch = encoder["patch_embed.proj.weight"].shape[-1]
    in_chans = encoder["patch_embed.proj.weight"].shape[1]
    grid = math.isqrt(encoder["pos_embed"].shape[1] - 1)
    depth = len({k.split(".")[1] for k in encoder if k.startswith("blocks.")})
    import yaml  # timm depends on PyYAML
    cfg = yaml.safe_load(s2["config"])
    heads = cfg["model"]["num_heads"]
    if not torch.allclose(encoder["pos_embed"][0], sincos(dim, grid), atol=1e-6):
        fail("pos_embed is not the sin-cos table")
    if not torch.allclose(model["decoder_pos_embed"][0], sincos(model["decoder_embed.weight"].shape[0], grid), atol=1e-6):
        fail("decoder_pos_embed is not the sin-cos table")

    import timm
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(img_size=grid * patch, patch_size=patch, in_chans=in_chans, embed_dim=dim, depth=depth,
                            num_heads=heads, num_classes=0, global_pool="",
                            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6))
    vit.load_state_dict(encoder, strict=True)  # raises on any name or shape mismatch
    with torch.no_grad():
        out = vit.forward_features(torch.randn(2, in_chans, grid * patch, grid * patch))
    if not torch.isfinite(out).all():
        fail("timm forward with the loaded weights is not finite")

    for k, v in s2["teacher"].items():
        if not torch.equal(v, s1["model"][k]):
            fail(f"stage-2 teacher '{k}' differs from the stage-1 student")
    opt = last.get("optimizer")
    if opt is None or set(opt["exp_avg"]) != set(k for k in model if k not in ("pos_embed", "decoder_pos_embed")):
        fail("checkpoint-last.pt optimizer state is not keyed by the student's parameter names")
    print(f"check_checkpoint: OK (torch {torch.__version__}, timm {timm.__version__}; encoder {dim}x{depth}, "
          f"{len(encoder)} tensors loaded strictly into timm VisionTransformer)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    main(sys.argv[1])
