#!/usr/bin/env python3
"""PyTorch baseline for bench/compare.sh: one dBOT training step as the official code runs it (MAE-style
student with timm Blocks, frozen teacher under no_grad on the full image, SmoothL1(beta 2) on normalized
targets, torch.optim.AdamW with the same weight-decay groups), on pre-made tensors (no data loading).
Prints one line: images/s and ms/step. Sizes come from the command line (see --help)."""
import argparse
import time
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import Block, PatchEmbed


class Encoder(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.patch_embed = PatchEmbed(a.img, a.patch, a.in_chans, a.dim)
        L = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, a.dim))
        self.pos_embed = nn.Parameter(torch.randn(1, L + 1, a.dim) * 0.02, requires_grad=False)
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.ModuleList([Block(a.dim, a.heads, 4.0, qkv_bias=True, norm_layer=norm) for _ in range(a.depth)])
        self.norm = norm(a.dim)


class Student(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.a = a
        self.enc = Encoder(a)
        L = self.enc.patch_embed.num_patches
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.decoder_embed = nn.Linear(a.dim, a.dec_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, a.dec_dim))
        self.decoder_pos_embed = nn.Parameter(torch.randn(1, L + 1, a.dec_dim) * 0.02, requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            [Block(a.dec_dim, a.dec_heads, 4.0, qkv_bias=True, norm_layer=norm) for _ in range(a.dec_depth)])
        self.decoder_norm = norm(a.dec_dim)
        self.decoder_predp = nn.Linear(a.dec_dim, a.dim)

    def forward(self, imgs, target):
        e = self.enc
        x = e.patch_embed(imgs) + e.pos_embed[:, 1:]
        N, L, D = x.shape
        keep = int(L * (1 - self.a.mask))
        noise = torch.rand(N, L)
        ids_shuffle = torch.argsort(noise, 1)
        ids_restore = torch.argsort(ids_shuffle, 1)
        x = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, D))
        mask = torch.ones(N, L)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        x = torch.cat([(e.cls_token + e.pos_embed[:, :1]).expand(N, -1, -1), x], 1)
        for b in e.blocks:
            x = b(x)
        x = self.decoder_embed(e.norm(x))
        m = self.mask_token.repeat(N, L - keep, 1)
        y = torch.cat([x[:, 1:], m], 1)
        y = torch.gather(y, 1, ids_restore[..., None].expand(-1, -1, y.shape[2]))
        x = torch.cat([x[:, :1], y], 1) + self.decoder_pos_embed
        for b in self.decoder_blocks:
            x = b(x)
        pred = self.decoder_predp(self.decoder_norm(x)).float()
        t = target.float()
        t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6) ** 0.5
        loss = F.smooth_l1_loss(pred, t, reduction="none", beta=2.0).mean(-1)
        w = torch.cat([torch.ones(N, 1), mask], 1)
        return (loss * w).sum() / w.sum()


def teacher_forward(t, imgs):
    x = t.patch_embed(imgs) + t.pos_embed[:, 1:]
    x = torch.cat([(t.cls_token + t.pos_embed[:, :1]).expand(x.shape[0], -1, -1), x], 1)
    for b in t.blocks:
        x = b(x)
    return x


def main():
    p = argparse.ArgumentParser(description=__doc__)
    for name, default in [("img", 28), ("patch", 7), ("in-chans", 1), ("dim", 128), ("depth", 3), ("heads", 4),
                          ("dec-dim", 64), ("dec-depth", 2), ("dec-heads", 4), ("batch", 128), ("threads", 2),
                          ("iters", 20), ("warmup", 3)]:
        p.add_argument("--" + name, type=int, default=default)
    p.add_argument("--mask", type=float, default=0.5)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    student, teacher = Student(a), Encoder(a)
    teacher.requires_grad_(False)
    decay, no_decay = [], []
    for n, prm in student.named_parameters():
        if prm.requires_grad:
            (no_decay if prm.ndim == 1 or n.endswith(".bias") else decay).append(prm)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.95))
    imgs = torch.randn(a.batch, a.in_chans, a.img, a.img)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            with torch.no_grad():
                target = teacher_forward(teacher, imgs)
            loss = student(imgs, target)
        loss.backward()
        opt.step()
        opt.zero_grad()

    for _ in range(a.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(a.iters):
        step()
    ms = (time.perf_counter() - t0) / a.iters * 1000
    print(f"pytorch {torch.__version__} {a.precision}: {ms:.2f} ms/step, {a.batch / ms * 1000:.1f} images/s")


if __name__ == "__main__":
    main()
