#!/usr/bin/env python3
"""Golden values for dbot's per-sample transforms (tests/test_transforms.cpp): torchvision's own
RandomResizedCrop.get_params, run with chosen uniform draws (torch.empty(1).uniform_ and torch.randint
are replaced by a feeder), so that dbot's sampler is checked against torchvision's code, not a copy of it.

Regenerate (byte-identical for the same torchvision):
    python3 tests/reference/make_transforms_golden.py > tests/reference/transforms_golden.json
Made with torchvision 0.29.2 (PyPI).
"""
import json
import math
from unittest import mock

import numpy as np
import torch
import torchvision
from torchvision.transforms import RandomResizedCrop


class Feeder:
    """Stands in for torch's draws: uniform_(a, b) -> a + (b - a) u, randint(lo, hi) -> lo + floor((hi - lo) u)."""

    def __init__(self, us):
        self.us = list(us)

    def empty(self, *args, **kwargs):
        feeder = self

        class T:
            def uniform_(self, a, b):
                return torch.tensor([a + (b - a) * feeder.us.pop(0)], dtype=torch.float64)
        return T()

    def randint(self, lo, hi, size=None):
        return torch.tensor([lo + math.floor((hi - lo) * self.us.pop(0))])


def crop_case(h, w, scale, us):
    feeder = Feeder(us)
    img = torch.zeros(1, h, w)
    with mock.patch.object(torch, "empty", feeder.empty), mock.patch.object(torch, "randint", feeder.randint):
        top, left, ch, cw = RandomResizedCrop.get_params(img, scale, [3.0 / 4.0, 4.0 / 3.0])
    return {"h": h, "w": w, "scale": list(scale), "uniforms": list(us), "box": [int(top), int(left), int(ch), int(cw)]}


def main():
    rng = np.random.RandomState(0)
    crops = []
    for h, w, scale in [(375, 500, (0.2, 1.0)), (28, 28, (0.5, 1.0)), (100, 30, (0.08, 1.0))]:
        for _ in range(4):
            crops.append(crop_case(h, w, scale, [round(float(u), 6) for u in rng.rand(40)]))
    # Every try rejected (the crop always too wide): torchvision's centre-crop fallback with the ratio clamp.
    crops.append(crop_case(100, 10, (0.9, 1.0), [0.999] * 40))
    crops.append(crop_case(10, 100, (0.9, 1.0), [0.001] * 40))
    print(json.dumps({"torchvision": torchvision.__version__, "random_resized_crop": crops}, separators=(",", ":")))


if __name__ == "__main__":
    main()
