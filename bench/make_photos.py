#!/usr/bin/env python3
"""An ImageNet-like ImageFolder of real-photo JPEGs for the data benchmarks (bench/compare_data.sh).

    bench/make_photos.py OUT_DIR [--count 2000] [--classes 10] [--val-count 100] [--skimage-data DIR] [--seed 0]

Writes OUT_DIR/train/<class>/*.jpg (--count images) and OUT_DIR/val/<class>/*.jpg (--val-count), JPEG
quality 90 with PIL's default 4:2:0 chroma subsampling, mostly 500x375 and one in five 375x500 (ImageNet's
most common sizes). Class k is the k-th of the real photos shipped in Debian's python3-skimage package
(astronaut, chelsea the cat, coffee, ...); every image is a random crop of its photo (50-100 % of the
largest box with the output's aspect ratio, anywhere in the photo), rescaled with a random PIL filter and
flipped with probability 1/2, so no two files are the same and the decoder sees real photographic content. The
photos are 300-1411 pixels on a side and fairly smooth: the files average about 42 KiB (ImageNet's
~110 KiB), so entropy decoding is a smaller share of the work than on ImageNet.

The photos come from --skimage-data (default: the installed package's data folder when there is one, else
~/.cache/dbot/skimage-data). When that folder is missing the script fetches the package without its
dependencies (apt-get download python3-skimage; dpkg -x) and copies the photos there. Needs Pillow.
"""
import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile

from PIL import Image

# Real photographs in skimage/data (0.19): (file, class name). Grayscale ones are stored as RGB JPEGs.
PHOTOS = [
    ("astronaut.png", "astronaut"),
    ("chelsea.png", "cat"),
    ("coffee.png", "coffee"),
    ("motorcycle_left.png", "motorcycle"),
    ("rocket.jpg", "rocket"),
    ("hubble_deep_field.jpg", "galaxies"),
    ("retina.jpg", "retina"),
    ("ihc.png", "tissue"),
    ("camera.png", "cameraman"),
    ("coins.png", "coins"),
    ("motorcycle_right.png", "motorcycle_right"),
    ("moon.png", "moon"),
    ("brick.png", "brick"),
    ("grass.png", "grass"),
    ("gravel.png", "gravel"),
]
SYSTEM_DATA = "/usr/lib/python3/dist-packages/skimage/data"
FILTERS = [Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.LANCZOS]


def fetch_skimage_data(dest):
    """apt-get download python3-skimage, dpkg -x it, copy the photos into dest."""
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            sys.exit(f"make_photos: {dest} is missing and {tool} is not available to fetch python3-skimage")
    with tempfile.TemporaryDirectory(prefix="skimage-deb-") as tmp:
        os.chmod(tmp, 0o755)  # apt's _apt user writes the download when it can reach the folder
        print(f"make_photos: fetching python3-skimage into {tmp} (apt-get download; dpkg -x)", file=sys.stderr)
        r = subprocess.run(["apt-get", "download", "python3-skimage"], cwd=tmp)
        if r.returncode != 0:
            sys.exit("make_photos: apt-get download python3-skimage failed (run apt-get update first?)")
        debs = [f for f in os.listdir(tmp) if f.endswith(".deb")]
        if not debs:
            sys.exit("make_photos: apt-get download produced no .deb")
        subprocess.run(["dpkg", "-x", os.path.join(tmp, debs[0]), os.path.join(tmp, "x")], check=True)
        src = None
        for root, dirs, files in os.walk(os.path.join(tmp, "x")):
            if root.endswith(os.path.join("skimage", "data")) and "astronaut.png" in files:
                src = root
                break
        if src is None:
            sys.exit(f"make_photos: no skimage/data folder in {debs[0]}")
        os.makedirs(dest, exist_ok=True)
        for name, _ in PHOTOS:
            if os.path.exists(os.path.join(src, name)):
                shutil.copy2(os.path.join(src, name), dest)


def load_photos(data_dir, classes):
    photos = []
    for name, label in PHOTOS:
        path = os.path.join(data_dir, name)
        if not os.path.exists(path):
            continue
        with Image.open(path) as im:
            photos.append((label, im.convert("RGB")))
        if len(photos) == classes:
            break
    if len(photos) < classes:
        sys.exit(f"make_photos: only {len(photos)} of the photos in {data_dir}; asked for {classes} classes")
    return photos


def random_view(photo, rng):
    """A random crop of the photo with the output's aspect ratio, rescaled to it, maybe flipped."""
    w_out, h_out = (375, 500) if rng.random() < 0.2 else (500, 375)
    W, H = photo.size
    aspect = w_out / h_out
    # The largest box of that aspect ratio inside the photo, then 50-100 % of it.
    bw, bh = (W, W / aspect) if W / H < aspect else (H * aspect, H)
    f = rng.uniform(0.5, 1.0)
    cw, ch = bw * f, bh * f
    x0, y0 = rng.uniform(0, W - cw), rng.uniform(0, H - ch)
    im = photo.resize((w_out, h_out), rng.choice(FILTERS), box=(x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return im


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--count", type=int, default=2000, help="training images (default 2000)")
    ap.add_argument("--val-count", type=int, default=100, help="validation images (default 100)")
    ap.add_argument("--classes", type=int, default=10, help=f"classes, one photo each (at most {len(PHOTOS)})")
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--skimage-data", help="skimage's data folder (fetched from the Debian package when missing)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if not 1 <= a.classes <= len(PHOTOS):
        sys.exit(f"make_photos: --classes must be 1..{len(PHOTOS)}")
    data_dir = a.skimage_data
    if data_dir is None:
        data_dir = SYSTEM_DATA if os.path.isdir(SYSTEM_DATA) else os.path.expanduser("~/.cache/dbot/skimage-data")
    if not os.path.isdir(data_dir):
        fetch_skimage_data(data_dir)
    photos = load_photos(data_dir, a.classes)
    rng = random.Random(a.seed)
    total_bytes = 0
    for split, count in (("train", a.count), ("val", a.val_count)):
        for i in range(count):
            label, photo = photos[i % len(photos)]
            d = os.path.join(a.out_dir, split, label)
            os.makedirs(d, exist_ok=True)
            path = os.path.join(d, f"{label}_{i:06d}.jpg")
            random_view(photo, rng).save(path, "JPEG", quality=a.quality)
            total_bytes += os.path.getsize(path)
    n = a.count + a.val_count
    print(f"make_photos: {a.count} train + {a.val_count} val JPEGs in {a.classes} classes under {a.out_dir} "
          f"(quality {a.quality}, mean {total_bytes / max(n, 1) / 1024:.0f} KiB; photos from {data_dir})")


if __name__ == "__main__":
    main()
