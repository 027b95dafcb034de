#!/usr/bin/env python3
"""torchvision's input pipeline doing the work `dbot bench data` times, for bench/compare_data.sh.

    bench/torchvision_data.py --path DIR [--size 224] [--workers 1 2] [--images 1000] [--batch 64] [--seed 0]

datasets.ImageFolder(DIR/train) (PIL open + convert("RGB"), the whole file decoded) with
Compose([RandomResizedCrop(size, scale=(0.2, 1.0), interpolation=BICUBIC), RandomHorizontalFlip(),
PILToTensor()]): uint8 [3, S, S] per image, batched by the default collate, as dbot's Loader hands over
uint8 batches (both normalize later, on the device). DataLoader(shuffle=True, drop_last=True,
num_workers=w, persistent_workers=True, pin_memory=False: there is no GPU to copy to; default
prefetch_factor 2). Workers are processes (each runs torch with one thread, as DataLoader sets it); the
main process only receives the collated batches through shared memory. num_workers=0 (decoding in the main
process) is a row of its own when asked for (--workers 0); the "1 worker" row is num_workers=1, one
separate process, like dbot's one worker thread.

Timing as dbot's: per worker count a fresh DataLoader, one untimed batch per worker (warm-up: process
start, page cache; each worker makes whole batches, so the first round of w batches finishes together),
then ceil(images / (batch x w)) x w timed batches, epochs continuing. Prints the same table as dbot and
one "torchvision-bench-data: workers=W images_per_s=X" line per row.
"""
import argparse
import math
import os
import time

import PIL
import torch
import torchvision
from torchvision import datasets, transforms


def cpu_description():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} cores)"


def one_thread(_worker_id):
    torch.set_num_threads(1)  # DataLoader does this in its workers already; explicit here


def bench(dataset, workers, images, batch, seed):
    torch.manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
        persistent_workers=workers > 0, pin_memory=False, worker_init_fn=one_thread if workers > 0 else None)
    it = iter(loader)

    def next_batch():
        nonlocal it
        try:
            return next(it)
        except StopIteration:  # the next epoch (the persistent workers stay)
            it = iter(loader)
            return next(it)

    per_round = max(workers, 1)
    for _ in range(per_round):  # warm-up: one batch per worker
        next_batch()
    rounds = math.ceil(images / (batch * per_round))
    n = 0
    t0 = time.perf_counter()
    for _ in range(rounds * per_round):
        n += next_batch()[0].shape[0]
    seconds = time.perf_counter() - t0
    del it, loader  # stop the workers before the next row starts its own
    return n, seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--path", required=True, help="an ImageFolder root (DIR/train is read)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                    help="DataLoader num_workers values, one row each (0 = in the main process)")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    transform = transforms.Compose([
        transforms.RandomResizedCrop(a.size, scale=(0.2, 1.0), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(),
        transforms.PILToTensor(),
    ])
    root = os.path.join(a.path, "train")
    dataset = datasets.ImageFolder(root, transform=transform)
    print(f"torchvision bench data: torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"Pillow {PIL.__version__}, CPU {cpu_description()}")
    print(f"{os.path.abspath(root)}: {len(dataset)} images in {len(dataset.classes)} classes")
    print(f"RandomResizedCrop({a.size}, scale=(0.2, 1.0), bicubic) + RandomHorizontalFlip + PILToTensor, uint8, "
          f"batch {a.batch}, DataLoader worker processes (0 = the main process)\n")
    rows = []
    for w in a.workers:
        n, s = bench(dataset, w, a.images, a.batch, a.seed)
        rows.append((w, n, s))
    print("| workers | images | seconds | images/s | images/s per worker |")
    print("|---|---|---|---|---|")
    for w, n, s in rows:
        label = "0 (main process)" if w == 0 else str(w)
        print(f"| {label} | {n} | {s:.2f} | {n / s:.1f} | {n / s / max(w, 1):.1f} |")
    print()
    for w, n, s in rows:
        print(f"torchvision-bench-data: workers={w} images_per_s={n / s:.2f}")


if __name__ == "__main__":
    main()
