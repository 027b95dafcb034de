#!/usr/bin/env python3
"""PyTorch baseline for bench/compare.sh: one dBOT training step, as the official code runs it and in the
fastest honest form PyTorch offers, on pre-made tensors (no data loading).

The step (official dBOT, models_mae.py / engine_pretrain.py): an MAE-style student (ViT encoder on the
unmasked patches, decoder with mask tokens, decoder_predp to the teacher's width), a frozen teacher
(requires_grad False, eval, under no_grad) on the full image, SmoothL1(beta 2) against the teacher's last
block output normalized per token, torch.optim.AdamW with the MAE weight-decay groups (0.05 / none for
biases and norms), betas (0.9, 0.95). fp16 uses torch.amp.GradScaler as the official code does
(scale, backward, step, update); bf16 and fp32 need no scaler. The official loop also reads loss.item()
and a gradient norm for logging every step; both are left out here, as they are from dbot's step.

Forms (--attention x --optimizer):
  explicit  the Attention of timm 0.4.12 that the official code uses (q @ k^T * scale, softmax, @ v)
  sdpa      F.scaled_dot_product_attention (flash / memory-efficient kernels where available)
  default   torch.optim.AdamW as torch picks (foreach on CUDA, a per-tensor loop on CPU)
  foreach   AdamW(foreach=True);  fused: AdamW(fused=True)
The official form is explicit+default. The Block (norm1, attn with fused qkv Linear + proj, norm2,
Mlp fc1-GELU-fc2, LayerNorm eps 1e-6) is written out here so that both attention forms use it.

Output, one line per form (compare.sh parses it):
  pytorch <version> <precision> <form>: <ms> ms/step, <images/s> images/s
and with --all-forms a last line "fastest: <form> <ms> ms/step".
"""
import argparse
import contextlib
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    # the demo recipe (recipes/fmnist_vit_tiny.yaml)
    "demo": dict(img=28, patch=7, in_chans=1, dim=128, depth=3, heads=4, dec_dim=64, dec_depth=2, dec_heads=4,
                 mask=0.5, batch=128),
    # ViT-B/16 with the MAE/dBOT decoder (512 wide, 8 blocks, 16 heads), mask ratio 0.75
    "vit_base_patch16_224": dict(img=224, patch=16, in_chans=3, dim=768, depth=12, heads=12, dec_dim=512,
                                 dec_depth=8, dec_heads=16, mask=0.75, batch=128),
    # ViT-Tiny/4 on 32 px (CIFAR-sized) with a 128-wide, 4-block decoder, mask ratio 0.75
    "vit_tiny_patch4_32": dict(img=32, patch=4, in_chans=3, dim=192, depth=12, heads=3, dec_dim=128, dec_depth=4,
                               dec_heads=4, mask=0.75, batch=128),
    # ViT-S/16 with the MAE/dBOT decoder, mask ratio 0.75
    "vit_small_patch16_224": dict(img=224, patch=16, in_chans=3, dim=384, depth=12, heads=6, dec_dim=512,
                                  dec_depth=8, dec_heads=16, mask=0.75, batch=32),
}
PRESETS["vit_tiny_patch7_28"] = PRESETS["demo"]
ATTENTIONS = ["explicit", "sdpa"]
OPTIMIZERS = ["default", "foreach", "fused"]
OFFICIAL_FORM = "explicit+default"


class Attention(nn.Module):
    def __init__(self, dim, heads, sdpa):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.sdpa = sdpa
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.sdpa:
            x = F.scaled_dot_product_attention(q, k, v)
        else:  # timm 0.4.12, as in the official dBOT code
            attn = (q @ k.transpose(-2, -1)) * self.scale
            attn = attn.softmax(dim=-1)
            x = attn @ v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, sdpa, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, sdpa)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, img, patch, in_chans, dim):
        super().__init__()
        self.num_patches = (img // patch) ** 2
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


def init_weights(m):  # as MAE/dBOT: xavier_uniform Linear weights, zero biases, unit LayerNorm
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class Encoder(nn.Module):
    def __init__(self, a, sdpa):
        super().__init__()
        self.patch_embed = PatchEmbed(a.img, a.patch, a.in_chans, a.dim)
        L = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.randn(1, 1, a.dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, L + 1, a.dim) * 0.02, requires_grad=False)
        self.blocks = nn.ModuleList([Block(a.dim, a.heads, sdpa) for _ in range(a.depth)])
        self.norm = nn.LayerNorm(a.dim, eps=1e-6)

    def forward_teacher(self, imgs):  # the full image; tlayernorm 0 (official default): no final norm
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:]
        x = torch.cat([(self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1), x], 1)
        for b in self.blocks:
            x = b(x)
        return x


class Student(nn.Module):
    def __init__(self, a, sdpa):
        super().__init__()
        self.mask_ratio = a.mask
        self.enc = Encoder(a, sdpa)
        L = self.enc.patch_embed.num_patches
        self.decoder_embed = nn.Linear(a.dim, a.dec_dim)
        self.mask_token = nn.Parameter(torch.randn(1, 1, a.dec_dim) * 0.02)
        self.decoder_pos_embed = nn.Parameter(torch.randn(1, L + 1, a.dec_dim) * 0.02, requires_grad=False)
        self.decoder_blocks = nn.ModuleList([Block(a.dec_dim, a.dec_heads, sdpa) for _ in range(a.dec_depth)])
        self.decoder_norm = nn.LayerNorm(a.dec_dim, eps=1e-6)
        self.decoder_predp = nn.Linear(a.dec_dim, a.dim)

    def forward(self, imgs, target):
        e = self.enc
        x = e.patch_embed(imgs) + e.pos_embed[:, 1:]
        N, L, D = x.shape
        keep = int(L * (1 - self.mask_ratio))
        noise = torch.rand(N, L, device=x.device)  # drawn on the device, as the official code does
        ids_shuffle = torch.argsort(noise, 1)
        ids_restore = torch.argsort(ids_shuffle, 1)
        x = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, D))
        mask = torch.ones(N, L, device=x.device)
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
        pred = self.decoder_predp(self.decoder_norm(x)).float()  # the loss in fp32, as dbot's forward_loss
        t = target.float()
        t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6) ** 0.5
        loss = F.smooth_l1_loss(pred, t, reduction="none", beta=2.0).mean(-1)
        w = torch.cat([torch.ones(N, 1, device=x.device), mask], 1)  # the cls token counts, as officially
        return (loss * w).sum() / w.sum()


def make_scaler(device):
    try:
        return torch.amp.GradScaler(device)
    except (AttributeError, TypeError):  # torch < 2.3
        return torch.cuda.amp.GradScaler() if device == "cuda" else torch.cpu.amp.GradScaler()


def run_form(a, imgs, attention, optimizer):
    """Builds fresh models for one form, times the step; returns ms/step."""
    dev = torch.device(a.device)
    torch.manual_seed(0)
    sdpa = attention == "sdpa"
    student = Student(a, sdpa)
    teacher = Encoder(a, sdpa)
    student.apply(init_weights)
    teacher.apply(init_weights)
    student.to(dev).train()
    teacher.to(dev).eval().requires_grad_(False)
    decay, no_decay = [], []
    for n, prm in student.named_parameters():
        if prm.requires_grad:
            (no_decay if prm.ndim == 1 or n.endswith(".bias") else decay).append(prm)
    kw = {} if optimizer == "default" else {optimizer: True}
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.95), **kw)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(a.precision)
    scaler = make_scaler(a.device) if a.precision == "fp16" else None

    def autocast():  # no autocast at all in fp32 (torch 1.13's CPU autocast refuses a float32 dtype even disabled)
        return torch.autocast(a.device, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()

    def step():
        with autocast():
            with torch.no_grad():
                target = teacher.forward_teacher(imgs)
            loss = student(imgs, target)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for _ in range(a.warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(a.iters):
        step()
    sync()
    ms = (time.perf_counter() - t0) / a.iters * 1000
    del student, teacher, opt
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return ms


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="demo", choices=sorted(PRESETS),
                   help="size preset (default demo); the size flags below override it")
    for name in ["img", "patch", "in-chans", "dim", "depth", "heads", "dec-dim", "dec-depth", "dec-heads", "batch"]:
        p.add_argument("--" + name, type=int, default=None)
    p.add_argument("--mask", type=float, default=None, help="mask ratio")
    p.add_argument("--threads", type=int, default=2, help="CPU intra-op threads")
    p.add_argument("--iters", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--attention", choices=ATTENTIONS, default="explicit")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="default")
    p.add_argument("--all-forms", action="store_true", help="time every attention x optimizer form")
    a = p.parse_args()
    for k, v in PRESETS[a.model].items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.img % a.patch:
        p.error(f"image size {a.img} is not divisible by patch size {a.patch}")
    torch.set_num_threads(a.threads)
    if a.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("pytorch_step.py: --device cuda, but torch.cuda.is_available() is False")
        torch.backends.cudnn.benchmark = True  # as the official main_pretrain.py
        where = torch.cuda.get_device_name()
    else:
        where = f"{a.threads} thread(s)"
    print(f"# pytorch_step: {a.model} img {a.img} patch {a.patch} in_chans {a.in_chans} dim {a.dim} depth {a.depth} "
          f"heads {a.heads}, decoder {a.dec_dim}x{a.dec_depth} heads {a.dec_heads}, mask {a.mask}, batch {a.batch}; "
          f"{a.device} ({where}), {a.warmup} warmup + {a.iters} timed steps", flush=True)
    torch.manual_seed(0)
    imgs = torch.randn(a.batch, a.in_chans, a.img, a.img, device=a.device)

    forms = [(at, o) for at in ATTENTIONS for o in OPTIMIZERS] if a.all_forms else [(a.attention, a.optimizer)]
    results = {}
    for attention, optimizer in forms:
        form = f"{attention}+{optimizer}"
        try:
            ms = run_form(a, imgs, attention, optimizer)
        except (RuntimeError, TypeError, ValueError, AttributeError) as err:  # e.g. fused AdamW unsupported here
            print(f"# {form}: unavailable ({type(err).__name__}: {str(err).splitlines()[0][:200]})", flush=True)
            if not a.all_forms:
                sys.exit(1)
            continue
        results[form] = ms
        print(f"pytorch {torch.__version__} {a.precision} {form}: {ms:.2f} ms/step, "
              f"{a.batch / ms * 1000:.1f} images/s", flush=True)
    if a.all_forms and results:
        best = min(results, key=results.get)
        print(f"fastest: {best} {results[best]:.2f} ms/step")
    if not results:
        sys.exit(1)


if __name__ == "__main__":
    main()
