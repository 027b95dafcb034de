#!/usr/bin/env python3
"""Reference values for `dbot analyze` (src/dbot/eval/analyze.h): the two analysis tools computed the way
the official dBOT code's analysis/analysis.py computes them, on the tiny timm ViT of make_golden.py.

- attention maps: timm's Attention with its explicit (non-fused) path, captured by wrapping each block's
  attention (softmax(q k^T * scale), the tensor timm multiplies with v);
- mean attention distance: analysis.py's compute_distance_matrix / compute_mean_attention_dist (numpy),
  per image, then averaged over images;
- singular-value shares: analysis.py's svd(): block outputs x[:, 1:], tokens L2-normalized, np.linalg.svd
  per image, top-k sums over the total for k = 1..5, averaged over images.

Usage:  python3 tests/reference/make_analysis_golden.py [output.json]   (default: analysis_golden.json here)
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_golden as g  # noqa: E402  (the tiny configuration, fill_values, make_imgs, sincos_2d)


def distance_matrix(patch_size, num_patches, length):  # analysis.py's compute_distance_matrix
    d = np.zeros((num_patches, num_patches))
    for i in range(num_patches):
        for j in range(num_patches):
            if i == j:
                continue
            xi, yi = int(i / length), i % length
            xj, yj = int(j / length), j % length
            d[i, j] = patch_size * np.linalg.norm([xi - xj, yi - yj])
    return d


def mean_attention_dist(patch_size, attn):  # analysis.py's compute_mean_attention_dist, attn [B, h, T, T]
    attn = attn[..., 1:, 1:]
    n = attn.shape[-1]
    length = int(np.sqrt(n))
    d = distance_matrix(patch_size, n, length).reshape((1, 1, n, n))
    return np.mean(np.sum(attn * d, axis=-1), axis=-1)  # [B, h]


def attention_maps(vit, imgs):
    """softmax(q k^T * scale) per block, from timm's own modules (fused attention off in make_golden)."""
    maps = []
    x = vit._pos_embed(vit.patch_embed(imgs))
    for blk in vit.blocks:
        a = blk.attn
        y = blk.norm1(x)
        B, N, C = y.shape
        qkv = a.qkv(y).reshape(B, N, 3, a.num_heads, C // a.num_heads).permute(2, 0, 3, 1, 4)
        q, k = qkv[0], qkv[1]
        maps.append((q * a.scale) @ k.transpose(-2, -1))
        maps[-1] = maps[-1].softmax(dim=-1)
        x = blk(x)
    return maps


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "analysis_golden.json")
    vit = g.make_timm_vit()
    g.fill_module(vit, g.encoder_names(g.DEPTH))
    with torch.no_grad():
        vit.pos_embed.copy_(g.sincos_2d(g.D, g.GRID).unsqueeze(0))
    vit.eval()
    imgs = g.make_imgs()
    with torch.no_grad():
        maps = [m.double().numpy() for m in attention_maps(vit, imgs)]
        outs, x = [], vit._pos_embed(vit.patch_embed(imgs))
        for blk in vit.blocks:
            x = blk(x)
            outs.append(x[:, 1:].double().numpy())
    att = np.stack([mean_attention_dist(g.PATCH, m).mean(axis=0) for m in maps])  # [depth, h]
    svd = np.zeros((g.DEPTH, 5))
    for layer, t in enumerate(outs):
        t = t / np.linalg.norm(t, axis=-1, keepdims=True)
        for i in range(t.shape[0]):
            v = np.linalg.svd(t[i], compute_uv=False)
            for k in range(5):
                svd[layer, k] += v[:k + 1].sum() / v.sum()
    svd /= imgs.shape[0]
    golden = {"attention_distance": att.reshape(-1).tolist(), "sv_share": svd.reshape(-1).tolist(),
              "shape_attention": list(att.shape), "shape_sv": list(svd.shape)}
    with open(out_path, "w") as f:
        json.dump(golden, f)
        f.write("\n")
    print("torch %s; attention_distance %s; sv_share %s" % (torch.__version__, att.round(4).tolist(), svd.round(4).tolist()))


if __name__ == "__main__":
    main()
