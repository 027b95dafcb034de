#!/usr/bin/env python3
"""Writes a foreign teacher for dbot's tests: a timm ViT of another width, depth and patch size than dbot's
tiny test student, saved as a plain `torch.save` dict the way released checkpoints are (a "model" wrapper,
DistributedDataParallel's "module." prefix, a classification head), and the dBOT target it must give.

Usage: python3 tests/reference/make_teacher_golden.py [OUT_DIR]   (default: tests/data/teachers)
Writes OUT_DIR/timm_w24_d3_p4.pth and OUT_DIR/timm_w24_d3_p4.json. The committed files: torch 2.15.0 and
timm 1.0.31 (PyPI), CPU, float32, one thread.

The teacher: timm VisionTransformer(img_size=24, patch_size=4, in_chans=1, embed_dim=24, depth=3,
num_heads=2, mlp_ratio=4, num_classes=5, LayerNorm eps 1e-6), every tensor filled with
0.2 * sin(0.37 * j + crc32(name) % 101 * 0.1) over its flat index j (qkv weights amplitude 1.0), a learned
position table, grid 6 x 6. The student it teaches (tests/tiny_config.h, tiny_vit(1)): 8 px images, patch 2,
grid 4 x 4. So the teacher (patch 4) takes the images resized to 4 * 4 = 16 px (bicubic, antialiased, as
F.interpolate(..., antialias=True)) and its position table is resampled from 6 x 6 to 4 x 4 with timm's
resample_abs_pos_embed (bicubic, antialiased). The target is the last block's output before the final norm.

The JSON holds: "images" [2, 1, 8, 8] (normalized values: 0.5 * sin(0.3 * j)), "target" [2, 17, 24], the
resampled "pos_embed" [1, 17, 24], and the timm pos_embed resampled to 7 x 7 (upsampling: the Fashion-MNIST
demo's grid) as "pos_embed_7".
"""
import json
import os
import sys
import zlib
from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer


def fill(name, shape):
    n = 1
    for s in shape:
        n *= s
    j = torch.arange(n, dtype=torch.float64)
    amp = 1.0 if name.endswith(("qkv.weight", "in_proj_weight")) else 0.2  # attention: timm, open_clip
    v = amp * torch.sin(0.37 * j + (zlib.crc32(name.encode()) % 101) * 0.1)
    return v.reshape(shape).to(torch.float32)


def make_vit(img_size):
    return VisionTransformer(img_size=img_size, patch_size=4, in_chans=1, embed_dim=24, depth=3, num_heads=2,
                             mlp_ratio=4.0, num_classes=5, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6))


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "tests/data/teachers"
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    vit = make_vit(24)
    with torch.no_grad():
        for name, p in vit.state_dict().items():
            p.copy_(fill(name, p.shape))
    state = vit.state_dict()  # an OrderedDict with _metadata, as every released checkpoint
    wrapped = type(state)(("module." + k, v) for k, v in state.items())
    wrapped._metadata = type(state)(("module." + k if k else "module", v) for k, v in state._metadata.items())
    torch.save({"model": wrapped, "epoch": 99}, os.path.join(out_dir, "timm_w24_d3_p4.pth"))

    # The teacher as dbot must build it for an 8 px, patch-2 student: 16 px input, 4 x 4 grid.
    small = make_vit(16).eval()
    resampled = dict(state)
    resampled["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], [4, 4], num_prefix_tokens=1)
    small.load_state_dict(resampled, strict=True)
    images = (0.5 * torch.sin(0.3 * torch.arange(2 * 64, dtype=torch.float64))).reshape(2, 1, 8, 8).float()
    with torch.no_grad():
        x = F.interpolate(images, size=(16, 16), mode="bicubic", align_corners=False, antialias=True)
        x = small._pos_embed(small.patch_embed(x))
        x = small.blocks(small.norm_pre(x))  # before the final norm: dBOT's target
    golden = {
        "images": images.flatten().tolist(),
        "target": x.flatten().tolist(),
        "pos_embed": resampled["pos_embed"].flatten().tolist(),
        "pos_embed_7": resample_abs_pos_embed(state["pos_embed"], [7, 7], num_prefix_tokens=1).flatten().tolist(),
    }
    with open(os.path.join(out_dir, "timm_w24_d3_p4.json"), "w") as f:
        json.dump(golden, f)
    print(f"wrote {out_dir}/timm_w24_d3_p4.pth and .json; target {tuple(x.shape)}")


if __name__ == "__main__":
    main()
