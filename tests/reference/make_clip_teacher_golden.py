#!/usr/bin/env python3
"""Writes a CLIP image tower for dbot's tests, built by open_clip itself, saved as open_clip's training
checkpoints are (a "state_dict" wrapper, DistributedDataParallel's "module." prefix, the whole CLIP model:
the image tower under "visual." beside a text tower), and the dBOT target it must give: every token after
ln_post and the projection (METHOD.md, CLIP-teacher variant).

Usage: python3 tests/reference/make_clip_teacher_golden.py [OUT_DIR]   (default: tests/data/teachers)
Writes OUT_DIR/openclip_w32_d2_p4.pt and OUT_DIR/openclip_w32_d2_p4.json. The committed files: torch 2.15.0,
open_clip_torch 3.3.0 (PyPI), CPU, float32, one thread.

The tower: open_clip.transformer.VisionTransformer(image_size=16, patch_size=4, width=32, layers=2, heads=2,
mlp_ratio=4, output_dim=24, act_layer=QuickGELU, output_tokens=True), its conv1 swapped for a one-channel
one (bias-free, as open_clip's) so that it reads dbot's gray test images; LayerNorm eps 1e-5 (open_clip's).
Every tensor is filled with 0.2 * sin(0.37 * j + crc32(name) % 101 * 0.1) over its flat index j (attention
in_proj weights amplitude 1.0). Grid 4 x 4: the grid of dbot's tiny test student (8 px, patch 2), so the
tower takes the images resized to 16 px (bicubic, antialiased) and its position table is kept as it is.
The text tower is a few tensors with open_clip's names, which dbot must list as ignored.

The JSON holds "images" [2, 1, 8, 8] (0.5 * sin(0.3 * j)), "target" [2, 17, 24] = [pooled (CLS after
ln_post, projected) ; patch tokens after ln_post @ proj], both from open_clip's forward, and "target_gelu",
the same tower with exact GELU (open_clip's non-quickgelu models, mkd.teacher.act: gelu).
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU, VisionTransformer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_teacher_golden import fill  # noqa: E402  (the same deterministic fill)


def make_tower(act_layer):
    tower = VisionTransformer(image_size=16, patch_size=4, width=32, layers=2, heads=2, mlp_ratio=4.0,
                              output_dim=24, act_layer=act_layer, output_tokens=True)
    tower.conv1 = torch.nn.Conv2d(1, 32, kernel_size=4, stride=4, bias=False)
    with torch.no_grad():
        for name, p in tower.state_dict().items():
            p.copy_(fill(name, p.shape))
    return tower.eval()


def target(tower, images):
    with torch.no_grad():
        x = F.interpolate(images, size=(16, 16), mode="bicubic", align_corners=False, antialias=True)
        pooled, tokens = tower(x)  # pooled: ln_post(CLS) @ proj [N, P]; tokens: ln_post(patches) [N, L, D]
        return torch.cat([pooled.unsqueeze(1), tokens @ tower.proj], 1)  # [N, 1+L, P]


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "tests/data/teachers"
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    tower = make_tower(QuickGELU)
    state = {"module.visual." + k: v for k, v in tower.state_dict().items()}
    text = {  # a sliver of the text tower, names as open_clip's CLIP
        "positional_embedding": (77, 32), "token_embedding.weight": (49408 // 1024, 32),
        "transformer.resblocks.0.ln_1.weight": (32,), "ln_final.weight": (32,), "text_projection": (32, 24),
    }
    for k, shape in text.items():
        state["module." + k] = fill(k, shape)
    state["module.logit_scale"] = torch.tensor(4.6052)
    torch.save({"epoch": 32, "name": "tiny-quickgelu", "state_dict": state},
               os.path.join(out_dir, "openclip_w32_d2_p4.pt"))

    images = (0.5 * torch.sin(0.3 * torch.arange(2 * 64, dtype=torch.float64))).reshape(2, 1, 8, 8).float()
    quick = target(tower, images)
    gelu = target(make_tower(torch.nn.GELU), images)
    golden = {"images": images.flatten().tolist(), "target": quick.flatten().tolist(),
              "target_gelu": gelu.flatten().tolist()}
    with open(os.path.join(out_dir, "openclip_w32_d2_p4.json"), "w") as f:
        json.dump(golden, f)
    print(f"wrote {out_dir}/openclip_w32_d2_p4.pt and .json; target {tuple(quick.shape)}, "
          f"QuickGELU vs GELU max diff {(quick - gelu).abs().max().item():.3g}")


if __name__ == "__main__":
    main()
