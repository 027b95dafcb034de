#!/usr/bin/env python3
"""Which attention kernel is faster at which sequence length: the explicit softmax(q k^T * scale) v of timm 0.4.12
(and of the official dBOT code) against F.scaled_dot_product_attention, forward alone and forward + backward,
at the shapes of dBOT's steps. The rule in src/dbot/model/vit.cpp (attend) comes from this table; PyTorch's
ops are the kernels LibTorch runs (same version). Median of --iters calls after 2 warm-up calls.

  [LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4] bench/attention_kernels.py [--threads 2]
      [--precision fp32|bf16]

bf16 runs as dbot's step does under CPU autocast: q, k, v are bf16 (the qkv Linear's output) and both kernels run
inside torch.autocast("cpu", torch.bfloat16).
"""
import contextlib
import argparse
import time

import torch
import torch.nn.functional as F

# (images, heads, tokens, head width): the demo's student (CLS + 8 kept) and teacher/decoder (CLS + 16); the
# demo decoder's 16-wide heads; ViT-S/16 at 224 with mask 0.75 (50) and 0.66 (65) and unmasked (197);
# ViT-B/16's teacher and the MAE decoder (16 heads of 32) on 197 tokens.
SHAPES = [(128, 4, 9, 32), (128, 4, 17, 32), (128, 4, 17, 16), (64, 6, 50, 64), (64, 6, 65, 64), (64, 6, 197, 64),
          (32, 12, 197, 64), (32, 16, 197, 32)]


def median_ms(f, iters):
    for _ in range(2):
        f()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2] * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dtype = torch.bfloat16 if a.precision == "bf16" else torch.float32
    print(f"torch {torch.__version__}, cpu, {a.threads} thread(s), {a.precision}, median of {a.iters}\n")
    print("| N | heads | tokens | head dim | pass | explicit ms | SDPA ms | SDPA / explicit |")
    print("|---|---|---|---|---|---|---|---|")
    for n, h, t, hd in SHAPES:
        for backward in (False, True):
            q, k, v = [torch.randn(n, h, t, hd, dtype=dtype, requires_grad=backward) for _ in range(3)]
            grad = torch.randn(n, h, t, hd, dtype=dtype)

            def explicit():
                o = ((q @ k.transpose(-2, -1)) * hd ** -0.5).softmax(-1) @ v
                if backward:
                    o.backward(grad)

            def sdpa():
                o = F.scaled_dot_product_attention(q, k, v)
                if backward:
                    o.backward(grad)

            autocast = torch.autocast("cpu", torch.bfloat16) if a.precision == "bf16" else contextlib.nullcontext()
            with torch.set_grad_enabled(backward), autocast:
                e, s = median_ms(explicit, a.iters), median_ms(sdpa, a.iters)
            print(f"| {n} | {h} | {t} | {hd} | {'fwd+bwd' if backward else 'fwd'} | {e:.2f} | {s:.2f} | {s / e:.2f} |")


if __name__ == "__main__":
    main()
