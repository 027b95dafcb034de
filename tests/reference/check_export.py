#!/usr/bin/env python3
"""Checks dbot's exported weights and extracted features against the Python ecosystem.

Usage: python3 tests/reference/check_export.py ENCODER.safetensors HF_DIR FEATURES.safetensors

- ENCODER.safetensors (`dbot export`, timm layout): loads with strict=True into timm's VisionTransformer
  built from the file's dbot.model metadata.
- HF_DIR (`dbot export --layout hf`): loads into transformers.ViTModel (add_pooling_layer=False) with no
  missing, unexpected or mismatched keys, and its last_hidden_state equals timm's forward_features on the
  same input (max abs diff <= 1e-5). Skipped with a note when transformers is not installed, unless
  DBOT_REQUIRE_TRANSFORMERS=1.
- FEATURES.safetensors (`dbot extract` of the same encoder): for every image named in it, PIL + torchvision's
  eval transform (Resize(floor(img_size / crop_pct), bicubic) + CenterCrop + Normalize, the recipe's values
  from the encoder's dbot.recipe metadata) and timm's forward give the same pooled features (max abs diff
  <= 1e-4 x the features' largest magnitude).
Exits non-zero with a message on the first failure.
"""
import json
import math
import os
import sys
from functools import partial

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file


def fail(msg):
    print(f"check_export: FAIL: {msg}")
    sys.exit(1)


def metadata(path):
    with safe_open(path, "pt") as f:
        return f.metadata() or {}


def timm_encoder(path):
    from timm.models.vision_transformer import VisionTransformer

    meta = metadata(path)
    for key in ("format", "dbot.model", "dbot.version", "dbot.recipe", "dbot.stage"):
        if key not in meta:
            fail(f"{path}: metadata lacks {key}")
    if meta["format"] != "pt":
        fail(f"{path}: metadata format is {meta['format']}, transformers needs 'pt'")
    a = json.loads(meta["dbot.model"])
    vit = VisionTransformer(img_size=a["img_size"], patch_size=a["patch_size"], in_chans=a["in_chans"],
                            embed_dim=a["embed_dim"], depth=a["depth"], num_heads=a["num_heads"],
                            mlp_ratio=a["mlp_ratio"], num_classes=0, global_pool="",
                            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6))
    vit.load_state_dict(load_file(path), strict=True)  # raises on any name or shape mismatch
    return vit.eval(), a, yaml.safe_load(meta["dbot.recipe"])


def check_hf(hf_dir, vit, a):
    try:
        from transformers import ViTModel
    except ImportError:
        if os.environ.get("DBOT_REQUIRE_TRANSFORMERS") == "1":
            fail("transformers is not installed, but DBOT_REQUIRE_TRANSFORMERS=1")
        print("check_export: note: transformers not installed; skipped the Hugging Face load")
        return "skipped"
    import transformers

    model, info = ViTModel.from_pretrained(hf_dir, add_pooling_layer=False, output_loading_info=True)
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        if info.get(kind):
            fail(f"{hf_dir}: {kind} {sorted(info[kind])}")
    x = torch.randn(3, a["in_chans"], a["img_size"], a["img_size"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (model.eval()(x).last_hidden_state - vit.forward_features(x)).abs().max().item()
    if not diff <= 1e-5:
        fail(f"{hf_dir}: ViTModel and timm differ by {diff}")
    return f"transformers {transformers.__version__} ViTModel loads with no missing/unexpected keys, max diff {diff:.1e}"


def reference_features(vit, a, recipe, names, pool):
    from PIL import Image
    from torchvision import transforms as T

    size = a["img_size"]
    crop_pct = recipe["data"]["crop_pct"]
    tf = T.Compose([T.Resize(math.floor(size / crop_pct), interpolation=T.InterpolationMode.BICUBIC),
                    T.CenterCrop(size), T.ToTensor(), T.Normalize(recipe["data"]["mean"], recipe["data"]["std"])])
    mode = "RGB" if a["in_chans"] == 3 else "L"
    x = torch.stack([tf(Image.open(n).convert(mode)) for n in names])
    with torch.no_grad():
        tokens = vit.forward_features(x)
    cls, mean = tokens[:, 0], tokens[:, 1:].mean(1)
    return {"cls": cls, "mean": mean, "cls+mean": torch.cat([cls, mean], 1)}[pool]


def main(encoder_path, hf_dir, features_path):
    torch.set_num_threads(1)
    vit, a, recipe = timm_encoder(encoder_path)
    hf = check_hf(hf_dir, vit, a)
    feats = load_file(features_path)
    names = bytes(feats["names"].tolist()).decode("utf-8").split("\n")[:-1]
    if len(names) != feats["features"].shape[0]:
        fail(f"{features_path}: {len(names)} names for {feats['features'].shape[0]} feature rows")
    pool = metadata(features_path)["dbot.pool"]
    want = reference_features(vit, a, recipe, names, pool)
    got = feats["features"]
    if got.shape != want.shape:
        fail(f"{features_path}: features {tuple(got.shape)}, the reference gives {tuple(want.shape)}")
    diff = (got - want).abs().max().item()
    scale = want.abs().max().item()
    if not diff <= 1e-4 * scale:
        fail(f"{features_path}: dbot extract and timm differ by {diff} (scale {scale})")
    import timm
    print(f"check_export: OK (timm {timm.__version__}: strict load; {hf}; dbot extract = PIL + torchvision + timm "
          f"on {len(names)} images, pool {pool}, max diff {diff:.1e} at scale {scale:.2f})")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__)
        sys.exit(2)
    main(*sys.argv[1:])
