#!/usr/bin/env python3
"""Reference outputs of timm's RandAugment ops (timm.data.auto_augment, on PIL) for dbot's data/rand_augment.

- Two small images made by a closed formula (RGB 12x16 and its PIL convert('L')), each op of the
  'rand-m9-mstd0.5-inc1' set applied with fixed arguments through timm's own op functions, with the
  keyword arguments timm's create_transform gives them (resample BICUBIC, fillcolor = the data mean x 255).
- The level -> argument maps of the increasing set at magnitudes 0, 4.5, 9 and 10 (random negation off).

Usage:  python3 tests/reference/make_randaugment_golden.py [output.json]  (default: randaugment_golden.json here)
"""
import json
import math
import os
import random
import sys

from PIL import Image
import PIL
import timm
import timm.data.auto_augment as aa

H, W = 12, 16
FILL_RGB = (124, 116, 104)  # timm: round(255 x ImageNet mean)
FILL_L = 73                 # round(255 x 0.2860), Fashion-MNIST's mean


def make_rgb():
    px = []
    for y in range(H):
        for x in range(W):
            r = int(127.5 + 127.5 * math.sin(0.45 * x + 0.2 * y))
            g = int(255 * ((x * 7 + y * 13) % 29) / 28)
            b = (x * 16 + y * 5) % 256
            px.append((r, g, b))
    img = Image.new("RGB", (W, H))
    img.putdata(px)
    return img


CASES = [  # (op, args)
    ("AutoContrast", ()), ("Equalize", ()), ("Invert", ()),
    ("Rotate", (27.0,)), ("Rotate", (-13.5,)),
    ("PosterizeIncreasing", (1,)), ("PosterizeIncreasing", (3,)),
    ("SolarizeIncreasing", (26,)), ("SolarizeIncreasing", (180,)),
    ("SolarizeAdd", (99,)),
    ("ColorIncreasing", (1.81,)), ("ColorIncreasing", (0.19,)),
    ("ContrastIncreasing", (1.81,)), ("ContrastIncreasing", (0.19,)),
    ("BrightnessIncreasing", (1.81,)), ("BrightnessIncreasing", (0.19,)),
    ("SharpnessIncreasing", (1.81,)), ("SharpnessIncreasing", (0.19,)),
    ("ShearX", (0.27,)), ("ShearX", (-0.27,)), ("ShearY", (0.13,)),
    ("TranslateXRel", (0.405,)), ("TranslateXRel", (-0.2,)), ("TranslateYRel", (0.3,)),
]


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "randaugment_golden.json")
    rgb = make_rgb()
    gray = rgb.convert("L")
    golden = {"height": H, "width": W, "image_rgb": list(rgb.tobytes()),
              "image_l": list(gray.tobytes()), "cases": [], "levels": {}}
    for mode, img, fill in (("RGB", rgb, FILL_RGB), ("L", gray, FILL_L)):
        for op, args in CASES:
            fn = aa.NAME_TO_OP[op]
            out = fn(img, *args, fillcolor=fill, resample=Image.BICUBIC)
            data = list(out.tobytes())
            golden["cases"].append({"op": op, "args": list(args), "mode": mode, "out": data})
    saved = random.random
    random.random = lambda: 0.1  # _randomly_negate: negate when random() > 0.5
    try:
        for op in aa._RAND_INCREASING_TRANSFORMS:
            level_fn = aa.LEVEL_TO_ARG[op]
            golden["levels"][op] = [list(level_fn(m, aa._HPARAMS_DEFAULT)) if level_fn else []
                                    for m in (0.0, 4.5, 9.0, 10.0)]
    finally:
        random.random = saved
    with open(out_path, "w") as f:
        json.dump(golden, f, separators=(",", ":"))
        f.write("\n")
    print("Pillow %s, timm %s: %d cases" % (PIL.__version__, timm.__version__, len(golden["cases"])))


if __name__ == "__main__":
    main()
