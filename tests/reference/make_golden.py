#!/usr/bin/env python3
"""Independent PyTorch reference for the dBOT C++ re-implementation.

Builds a tiny dBOT student (MAE-style encoder/decoder + decoder_predp) and a
tiny frozen ViT teacher, fills every parameter with deterministic values that
the C++ side can regenerate without files, and writes the intermediate results
(sin-cos tables, masking, ViT forward, teacher target, student prediction,
loss, gradients, three AdamW steps, the per-stage lr schedule) to golden.json.

Usage:  python3 tests/reference/make_golden.py [output.json]
        (default output: golden.json next to this script)

Mirrors MAE's models_mae.py / dBOT's models (timm Block is used for the blocks,
timm VisionTransformer for the "vit_forward" check). No randomness: all inputs
(parameters, images, masking noise) are given by closed formulas below.
"""
import json
import math
import sys
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F
import timm
from timm.models.vision_transformer import Block, VisionTransformer

torch.set_num_threads(1)
torch.set_default_dtype(torch.float32)

# Use timm's explicit (non-fused) attention path, closest to the official
# timm 0.4.12 code (softmax(q k^T * scale) v). Same math either way.
try:
    from timm.layers import set_fused_attn
    set_fused_attn(False)
except Exception:  # older timm has no fused attention
    pass

# ---------------------------------------------------------------- configuration
IMG, PATCH, CH = 8, 2, 3
GRID = IMG // PATCH            # 4
L = GRID * GRID                # 16
D, DEPTH, HEADS = 16, 2, 2     # encoder (student and teacher)
DD, DDEPTH, DHEADS = 8, 1, 2   # decoder
MLP = 4.0
EPS = 1e-6
N = 2
MASK_RATIO = 0.75
LEN_KEEP = int(L * (1 - MASK_RATIO))  # 4


def norm_layer(dim, **kwargs):
    return nn.LayerNorm(dim, eps=EPS, **kwargs)  # kwargs: newer timm passes device/dtype


# ---------------------------------------------------------------- given values
def fill_values(name, shape):
    """v_j = a*sin(0.7*j + 0.01*(crc32(name) % 997) + 1.0), float64 -> float32.

    a = 1.0 for names ending in "qkv.weight" (so that attention is far from uniform and the q/k path is
    exercised), 0.2 otherwise."""
    n = 1
    for s in shape:
        n *= s
    off = 0.01 * (zlib.crc32(name.encode()) % 997) + 1.0
    amp = 1.0 if name.endswith('qkv.weight') else 0.2
    vals = [amp * math.sin(0.7 * j + off) for j in range(n)]
    return torch.tensor(vals, dtype=torch.float64).reshape(shape).to(torch.float32)


def make_imgs():
    n = N * CH * IMG * IMG
    vals = [1.5 * math.sin(0.3 * j + 0.5) for j in range(n)]
    return torch.tensor(vals, dtype=torch.float64).reshape(N, CH, IMG, IMG).to(torch.float32)


def make_noise():
    vals = []
    for j in range(N * L):
        x = math.sin(12.9898 * (j + 1)) * 43758.5453
        vals.append(x - math.floor(x))
    return torch.tensor(vals, dtype=torch.float64).reshape(N, L).to(torch.float32)


# ---------------------------------------------------------------- sin-cos tables
def sincos_1d(embed_dim, pos):
    """MAE get_1d_sincos_pos_embed_from_grid, float64; pos: list of floats."""
    assert embed_dim % 2 == 0
    half = embed_dim // 2
    omega = [1.0 / (10000.0 ** (k / (embed_dim / 2.0))) for k in range(half)]
    rows = []
    for p in pos:
        out = [p * w for w in omega]
        rows.append([math.sin(o) for o in out] + [math.cos(o) for o in out])
    return rows


def sincos_2d(embed_dim, grid_size, cls_token=True):
    """MAE get_2d_sincos_pos_embed: meshgrid(grid_w, grid_h) (w first), so the
    first half of the channels encodes the column index, the second the row."""
    assert embed_dim % 2 == 0
    # flattened row-major over (h, w): position p = h*g + w
    col = [float(p % grid_size) for p in range(grid_size * grid_size)]  # grid[0]
    row = [float(p // grid_size) for p in range(grid_size * grid_size)]  # grid[1]
    emb_h = sincos_1d(embed_dim // 2, col)
    emb_w = sincos_1d(embed_dim // 2, row)
    table = [a + b for a, b in zip(emb_h, emb_w)]
    if cls_token:
        table = [[0.0] * embed_dim] + table
    return torch.tensor(table, dtype=torch.float64).to(torch.float32)


# ---------------------------------------------------------------- models
class PatchEmbed(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(CH, D, kernel_size=PATCH, stride=PATCH)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # [N, L, D]


def make_block(dim, heads):
    return Block(dim, heads, mlp_ratio=MLP, qkv_bias=True, norm_layer=norm_layer)


class DBotStudent(nn.Module):
    """MAE encoder/decoder as in dBOT (decoder keeps the CLS token, decoder_predp)."""

    def __init__(self, teacher_dim=D):
        super().__init__()
        self.patch_embed = PatchEmbed()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.register_buffer("pos_embed", sincos_2d(D, GRID).unsqueeze(0))  # fixed
        self.blocks = nn.ModuleList([make_block(D, HEADS) for _ in range(DEPTH)])
        self.norm = norm_layer(D)
        self.decoder_embed = nn.Linear(D, DD, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, DD))
        self.register_buffer("decoder_pos_embed", sincos_2d(DD, GRID).unsqueeze(0))
        self.decoder_blocks = nn.ModuleList([make_block(DD, DHEADS) for _ in range(DDEPTH)])
        self.decoder_norm = norm_layer(DD)
        self.decoder_predp = nn.Linear(DD, teacher_dim, bias=True)

    @staticmethod
    def random_masking(x, noise, len_keep):
        n, l, d = x.shape
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x_masked = torch.gather(x, 1, ids_keep.unsqueeze(-1).repeat(1, 1, d))
        mask = torch.ones(n, l, device=x.device)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        return x_masked, mask, ids_restore, ids_keep

    def forward_encoder(self, imgs, noise):
        x = self.patch_embed(imgs)
        x = x + self.pos_embed[:, 1:, :]
        x, mask, ids_restore, ids_keep = self.random_masking(x, noise, LEN_KEEP)
        cls = self.cls_token + self.pos_embed[:, :1, :]
        x = torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return x, mask, ids_restore, ids_keep

    def forward_decoder(self, x, ids_restore):
        x = self.decoder_embed(x)
        mask_tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1, :], x_], dim=1)
        x = x + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_norm(x)
        return self.decoder_predp(x)  # [N, 1+L, D_teacher], CLS kept

    def forward(self, imgs, noise):
        latent, mask, ids_restore, ids_keep = self.forward_encoder(imgs, noise)
        pred = self.forward_decoder(latent, ids_restore)
        return pred, mask, ids_restore, ids_keep


def make_timm_vit():
    return VisionTransformer(img_size=IMG, patch_size=PATCH, in_chans=CH, embed_dim=D, depth=DEPTH,
                             num_heads=HEADS, mlp_ratio=MLP, qkv_bias=True, num_classes=0,
                             global_pool='', class_token=True, norm_layer=norm_layer,
                             drop_rate=0.0, drop_path_rate=0.0)


BLOCK_PARAMS = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
                "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
                "mlp.fc2.weight", "mlp.fc2.bias"]


def block_names(prefix, depth):
    return ["%s.%d.%s" % (prefix, i, s) for i in range(depth) for s in BLOCK_PARAMS]


def encoder_names(depth):
    return (["cls_token", "patch_embed.proj.weight", "patch_embed.proj.bias"] + block_names("blocks", depth)
            + ["norm.weight", "norm.bias"])


def decoder_names():
    return (["mask_token", "decoder_embed.weight", "decoder_embed.bias"] + block_names("decoder_blocks", DDEPTH)
            + ["decoder_norm.weight", "decoder_norm.bias", "decoder_predp.weight", "decoder_predp.bias"])


def fill_module(module, expected, prefix=""):
    params = dict(module.named_parameters())
    got = set(k for k in params if k != "pos_embed")
    assert got == set(expected), ("parameter names differ", sorted(got ^ set(expected)))
    with torch.no_grad():
        for name in expected:
            p = params[name]
            p.copy_(fill_values(prefix + name, tuple(p.shape)))


def vit_forward_by_hand(vit, imgs):
    """Teacher/encoder on the full image, output of the last block before the norm."""
    x = vit.patch_embed(imgs)
    x = torch.cat([vit.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
    x = x + vit.pos_embed  # all 17 tokens; the CLS row is zero
    for blk in vit.blocks:
        x = blk(x)
    return x


def normalize_target(t):
    mean = t.mean(dim=-1, keepdim=True)
    var = t.var(dim=-1, keepdim=True, unbiased=True)
    return (t - mean) / (var + 1e-6) ** 0.5


def dbot_loss(pred, target, mask):
    l = F.smooth_l1_loss(pred, target, reduction="none", beta=2.0).mean(dim=-1)  # [N, 1+L]
    w = torch.cat([torch.ones(mask.shape[0], 1, dtype=mask.dtype), mask], dim=1)
    return (l * w).sum() / w.sum()


def mae_patchify(imgs):
    """models_mae.patchify (MAE hard-codes 3 channels; CH here)."""
    p = PATCH
    h = w = imgs.shape[2] // p
    x = imgs.reshape(shape=(imgs.shape[0], CH, h, p, w, p))
    x = torch.einsum('nchpwq->nhwpqc', x)
    return x.reshape(shape=(imgs.shape[0], h * w, p ** 2 * CH))


def mae_loss(target, pred, mask, norm_pix):
    """models_mae.forward_loss on patchified targets."""
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.e-6) ** .5
    loss = (pred - target) ** 2
    loss = loss.mean(dim=-1)
    return (loss * mask).sum() / mask.sum()


# ---------------------------------------------------------------- lr schedule
def stage_lr(it, iters_per_epoch, boundaries, warmup, peak, min_lr):
    """MAE adjust_learning_rate with t counted from the start of the stage."""
    e = it // iters_per_epoch
    s = max(i for i in range(len(boundaries) - 1) if boundaries[i] <= e)
    start, length = boundaries[s], boundaries[s + 1] - boundaries[s]
    t = (it % iters_per_epoch) / iters_per_epoch + (e - start)
    if t < warmup:
        return peak * t / warmup
    return min_lr + (peak - min_lr) * 0.5 * (1.0 + math.cos(math.pi * (t - warmup) / (length - warmup)))


# ---------------------------------------------------------------- main
def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else __file__.rsplit("/", 1)[0] + "/golden.json"
    golden = {}

    def put(key, t, integer=False):
        t = torch.as_tensor(t).detach()
        shape = list(t.shape)
        flat = t.reshape(-1).tolist()
        if integer:
            data = [int(v) for v in flat]
        else:
            data = [float(v) for v in flat]
            assert all(math.isfinite(v) for v in data), key
        golden[key] = {"shape": shape, "data": data}

    imgs = make_imgs()
    noise = make_noise()
    assert len(set(noise.reshape(-1).tolist())) == N * L  # no ties in argsort

    # 1. sin-cos tables
    t16 = sincos_2d(16, 4)
    t8 = sincos_2d(8, 4)
    assert t16[0].abs().max() == 0 and t8[0].abs().max() == 0
    put("sincos_16_4", t16)
    put("sincos_8_4", t8)

    # student
    student = DBotStudent()
    fill_module(student, encoder_names(DEPTH) + decoder_names())
    student.train()  # drop path / dropout are 0, train == eval

    # 2. masking
    x_dummy = torch.zeros(N, L, 1)
    _, mask, ids_restore, ids_keep = DBotStudent.random_masking(x_dummy, noise, LEN_KEEP)
    assert (mask.sum(dim=1) == L - LEN_KEEP).all()
    put("mask_ids_keep", ids_keep, integer=True)
    put("mask_ids_restore", ids_restore, integer=True)
    put("mask", mask)

    # 3. timm VisionTransformer with the student encoder's params
    vit = make_timm_vit()
    fill_module(vit, encoder_names(DEPTH))
    with torch.no_grad():
        vit.pos_embed.copy_(t16.unsqueeze(0))
    vit.eval()
    captured = {}
    h = vit.norm.register_forward_hook(lambda m, i, o: captured.__setitem__("pre", i[0].detach().clone()))
    with torch.no_grad():
        vit_out = vit.forward_features(imgs)
    h.remove()
    assert list(vit_out.shape) == [N, 1 + L, D]
    with torch.no_grad():
        pre_hand = vit_forward_by_hand(vit, imgs)
        # the same by hand through the student module (no masking)
        xs = student.patch_embed(imgs) + student.pos_embed[:, 1:, :]
        xs = torch.cat([(student.cls_token + student.pos_embed[:, :1, :]).expand(N, -1, -1), xs], dim=1)
        for blk in student.blocks:
            xs = blk(xs)
    assert torch.allclose(pre_hand, captured["pre"], atol=1e-6, rtol=0), "timm _pos_embed differs from MAE"
    assert torch.allclose(xs, captured["pre"], atol=1e-6, rtol=0)
    assert torch.allclose(student.norm(xs), vit_out, atol=1e-6, rtol=0)
    put("vit_forward", vit_out)
    put("vit_prenorm", captured["pre"])

    # 4. teacher (frozen)
    teacher = make_timm_vit()
    fill_module(teacher, encoder_names(DEPTH), prefix="teacher.")
    with torch.no_grad():
        teacher.pos_embed.copy_(t16.unsqueeze(0))
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        teacher_out = vit_forward_by_hand(teacher, imgs)
        target = normalize_target(teacher_out)
    assert (teacher_out - captured["pre"]).abs().max() > 1e-3
    put("teacher_out", teacher_out)
    put("target_norm", target)

    # 5. student forward, loss, gradients
    pred, mask2, ids_restore2, _ = student(imgs, noise)
    assert torch.equal(mask2, mask) and torch.equal(ids_restore2, ids_restore)
    loss = dbot_loss(pred, target, mask2)
    loss.backward()
    assert math.isfinite(loss.item())
    put("pred", pred)
    put("loss", loss)
    params = dict(student.named_parameters())
    for name in ["norm.weight", "decoder_predp.bias", "blocks.0.attn.qkv.weight", "cls_token",
                 "mask_token", "patch_embed.proj.bias", "decoder_embed.weight"]:
        put("grad." + name, params[name].grad)

    # 6. AdamW, 3 steps, fresh student with the same filled params
    student = DBotStudent()
    fill_module(student, encoder_names(DEPTH) + decoder_names())
    decay, no_decay = [], []
    for name, p in student.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim == 1 or name.endswith(".bias"):
            no_decay.append(p)
        else:
            decay.append(p)
    opt = torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0},
                             {"params": decay, "weight_decay": 0.05}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    params = dict(student.named_parameters())
    losses = []
    for step in range(1, 4):
        opt.zero_grad()
        pred, mask_s, _, _ = student(imgs, noise)
        l_s = dbot_loss(pred, target, mask_s)
        losses.append(l_s.item())
        l_s.backward()
        opt.step()
        if step in (1, 3):
            for name in ["blocks.0.attn.qkv.weight", "norm.bias", "cls_token", "decoder_predp.bias"]:
                put("adamw.step%d.%s" % (step, name), params[name])
    assert losses[0] == loss.item()
    put("adamw.loss", torch.tensor(losses, dtype=torch.float64))

    # 7. per-stage lr schedule
    ipe, bounds, warm, peak, min_lr = 4, [0, 3, 6], 1, 1e-3, 0.0
    lrs = [stage_lr(it, ipe, bounds, warm, peak, min_lr) for it in range(24)]
    lrs2, cur = [], None
    for it in range(24):
        if (it % ipe) % 2 == 0:
            cur = stage_lr(it, ipe, bounds, warm, peak, min_lr)
        lrs2.append(cur)
    assert lrs[0] == 0.0 and lrs[12] == 0.0
    put("schedule.lr", torch.tensor(lrs, dtype=torch.float64))
    put("schedule.lr_accum2", torch.tensor(lrs2, dtype=torch.float64))

    # 8. the pixel target (MAE, the paper's baseline): models_mae.patchify and forward_loss, decoder CLS dropped
    pix = DBotStudent(teacher_dim=PATCH * PATCH * CH)
    fill_module(pix, encoder_names(DEPTH) + decoder_names(), prefix="pixels.")
    pred_pix, mask_p, _, _ = pix(imgs, noise)
    pred_pix = pred_pix[:, 1:, :]  # MAE: remove the cls token
    target_pix = mae_patchify(imgs)
    put("pixels.target", target_pix)
    put("pixels.pred", pred_pix)
    put("pixels.loss_raw", mae_loss(target_pix, pred_pix, mask_p, norm_pix=False))
    loss_pix = mae_loss(target_pix, pred_pix, mask_p, norm_pix=True)
    loss_pix.backward()
    put("pixels.loss", loss_pix)
    pparams = dict(pix.named_parameters())
    for name in ["decoder_predp.weight", "blocks.0.attn.qkv.weight", "cls_token"]:
        put("pixels.grad." + name, pparams[name].grad)

    with open(out_path, "w") as f:
        json.dump(golden, f, separators=(",", ":"))
        f.write("\n")
    print("torch %s, timm %s" % (torch.__version__, timm.__version__))
    print("wrote %d keys to %s; loss = %r; adamw.loss = %r" % (len(golden), out_path, loss.item(), losses))


if __name__ == "__main__":
    main()
