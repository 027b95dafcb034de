#!/usr/bin/env python3
"""Checks a `dbot finetune` run folder against the Python ecosystem.

Usage: python3 tests/reference/check_finetune.py RUN_DIR

- RUN_DIR/model.safetensors loads with strict=True into timm's VisionTransformer(global_pool='avg',
  num_classes=C) built from the file's dbot.model metadata, and equals the classifier in
  RUN_DIR/checkpoint-last.pt (read with torch.load(weights_only=True)).
- A forward of the timm model on a random batch gives finite logits of shape [2, C].
Exits non-zero with a message on the first failure.
"""
import json
import sys
from functools import partial

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer


def main():
    run = sys.argv[1]
    path = f"{run}/model.safetensors"
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    arch = json.loads(meta["dbot.model"])
    classes = int(meta["dbot.num_classes"])
    vit = VisionTransformer(img_size=arch["img_size"], patch_size=arch["patch_size"], in_chans=arch["in_chans"],
                            embed_dim=arch["embed_dim"], depth=arch["depth"], num_heads=arch["num_heads"],
                            mlp_ratio=arch["mlp_ratio"], qkv_bias=True, num_classes=classes, global_pool="avg",
                            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6))
    state = load_file(path)
    vit.load_state_dict(state, strict=True)
    ckpt = torch.load(f"{run}/checkpoint-last.pt", weights_only=True)
    assert ckpt["kind"] == "finetune", ckpt.get("kind")
    for k, v in state.items():
        assert torch.equal(ckpt["model"][k], v), f"{k}: model.safetensors differs from checkpoint-last.pt"
    vit.eval()
    with torch.no_grad():
        logits = vit(torch.randn(2, arch["in_chans"], arch["img_size"], arch["img_size"]))
    assert logits.shape == (2, classes) and torch.isfinite(logits).all(), logits.shape
    print(f"check_finetune: model.safetensors loads strictly into timm VisionTransformer(global_pool='avg', "
          f"num_classes={classes}); equal to checkpoint-last.pt ({len(state)} tensors)")


if __name__ == "__main__":
    main()
