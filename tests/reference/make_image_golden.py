#!/usr/bin/env python3
"""Test images and golden outputs for dbot's decoders and per-sample transforms (tests/test_decode.cpp,
tests/test_transforms.cpp), from PIL and torchvision, the pipeline of torchvision's ImageFolder.

1. Writes small images into tests/data/images/ (committed, a few KB each): crops of real photos from
   Debian's python3-skimage (astronaut.png, chelsea.png, coffee.png) saved as JPEG (baseline 4:2:0,
   progressive, 4:4:4, grayscale, CMYK), PNG (RGB, RGBA, gray, gray+alpha, palette, palette + tRNS,
   16-bit gray with values above 255, 16-bit RGB, 1-bit), WebP (lossy, lossless, alpha), PGM, PPM and
   BMP (24-bit, 8-bit palette), TIFF (LZW RGB, gray), plus a 320x240 JPEG for DCT-domain scaling.
2. Writes tests/reference/image_golden.json: per image, PIL's mode, Image.open().convert("RGB") and
   convert("L") pixels, torchvision's F.resized_crop(BICUBIC) (+ F.hflip) for chosen boxes, and the eval
   transform Resize(floor(size / crop_pct), BICUBIC) + CenterCrop(size). Pixels are base64 of uint8 [H, W, C].

Regenerate (from the repository root; needs the photos: `apt-get download python3-skimage` and
`dpkg -x python3-skimage_*.deb /tmp/skd/x`, or pass --skimage-data DIR):
    python3 tests/reference/make_image_golden.py
Made with Pillow 13.0.0 (libjpeg-turbo 3.2.0, libwebp 1.6.0) and torchvision 0.29.2, PyPI.
"""
import argparse
import base64
import json
import math
import os
import struct
import zlib

import numpy as np
import torchvision
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
IMAGES = os.path.join(HERE, "..", "data", "images")
BICUBIC = InterpolationMode.BICUBIC


def b64(img, mode):
    a = np.asarray(img.convert(mode), dtype=np.uint8)
    return base64.b64encode(a.tobytes()).decode()


def png16(arr, path, color):
    """A 16-bit PNG written by hand (PIL cannot write 16-bit RGB)."""
    h, w = arr.shape[:2]
    raw = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, color, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def write_images(src):
    photo = lambda name: Image.open(os.path.join(src, name)).convert("RGB")
    ast = photo("astronaut.png").crop((100, 30, 132, 54))  # 32x24
    che = photo("chelsea.png").crop((150, 60, 177, 81))  # 27x21, odd sizes (partial MCUs)
    cof = photo("coffee.png").resize((35, 24), Image.BICUBIC)
    out = lambda n: os.path.join(IMAGES, n)
    ast.save(out("baseline.jpg"), quality=90)
    che.save(out("progressive.jpg"), quality=85, progressive=True)
    cof.save(out("subsampling444.jpg"), quality=95, subsampling=0)
    ast.convert("L").save(out("gray.jpg"), quality=90)
    ast.convert("CMYK").save(out("cmyk.jpg"), quality=90)
    ast.save(out("rgb.png"))
    rgba = ast.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    rgba.save(out("rgba.png"))
    che.convert("L").save(out("gray.png"))
    che.convert("LA").save(out("gray_alpha.png"))
    pal = cof.convert("P", palette=Image.ADAPTIVE, colors=40)
    pal.save(out("palette.png"))
    pal.save(out("palette_trns.png"), transparency=3)
    png16(np.asarray(che.convert("L")).astype(np.uint16) * 3, out("gray16.png"), 0)  # up to 765: clipped
    png16(np.asarray(ast).astype(np.uint16) * 257 + 31, out("rgb16.png"), 2)
    ast.convert("1").save(out("bilevel.png"))
    ast.save(out("lossy.webp"), quality=80)
    rgba.save(out("alpha.webp"), quality=80)
    che.save(out("lossless.webp"), lossless=True)
    che.convert("L").save(out("gray.pgm"))
    ast.save(out("rgb.ppm"))
    ast.save(out("rgb24.bmp"))
    pal.save(out("palette8.bmp"))
    ast.save(out("rgb.tif"), compression="tiff_lzw")
    che.convert("L").save(out("gray.tif"))
    photo("chelsea.png").crop((60, 20, 380, 260)).save(out("large.jpg"), quality=90)  # 320x240


def eval_transform(img, size, crop_pct):
    return F.center_crop(F.resize(img, math.floor(size / crop_pct), BICUBIC), size)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--skimage-data", default="/tmp/skd/x/usr/lib/python3/dist-packages/skimage/data")
    args = ap.parse_args()
    os.makedirs(IMAGES, exist_ok=True)
    write_images(args.skimage_data)
    rng = np.random.default_rng(0)
    cases = []
    for name in sorted(os.listdir(IMAGES)):
        img = Image.open(os.path.join(IMAGES, name))
        case = {"file": name, "mode": img.mode, "width": img.width, "height": img.height}
        if name != "large.jpg":
            case["rgb"], case["l"] = b64(img, "RGB"), b64(img, "L")
        crops = []
        size = 32 if name == "large.jpg" else 12
        for k in range(4):  # boxes: whole image, then random ones; every other one flipped; L for the last
            if k == 0:
                top, left, h, w = 0, 0, img.height, img.width
            else:
                h = int(rng.integers(max(1, img.height // 3), img.height + 1))
                w = int(rng.integers(max(1, img.width // 3), img.width + 1))
                top, left = int(rng.integers(0, img.height - h + 1)), int(rng.integers(0, img.width - w + 1))
            mode = "L" if k == 3 else "RGB"
            out = F.resized_crop(img.convert(mode), top, left, h, w, [size, size], BICUBIC)
            if k % 2 == 1:
                out = F.hflip(out)
            crops.append({"box": [top, left, h, w], "flip": k % 2 == 1, "size": size, "mode": mode,
                          "out": b64(out, mode)})
        case["crops"] = crops
        s, p = ((12, 0.875), (10, 1.0))[len(cases) % 2]
        case["eval"] = {"size": s, "crop_pct": p, "out": b64(eval_transform(img.convert("RGB"), s, p), "RGB")}
        cases.append(case)
    meta = {"torchvision": torchvision.__version__, "pillow": Image.__version__}
    with open(os.path.join(HERE, "image_golden.json"), "w") as f:
        json.dump({"meta": meta, "images": cases}, f, indent=None, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
