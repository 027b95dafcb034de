#!/usr/bin/env python3
"""Reference values for `dbot finetune` (src/dbot/finetune/): the classifier, MAE's layer-wise lr decay
groups and timm's mixup/cutmix and losses, on the tiny configuration of make_golden.py.

- classifier: timm's VisionTransformer(global_pool='avg', num_classes=5): patch tokens averaged, fc_norm,
  head; every parameter (pos_embed included, learnable when fine-tuning) filled with make_golden's
  fill_values; logits of make_golden's images.
- lrd: MAE's util/lr_decay.py param_groups_lrd (re-stated below from the MAE/dBOT code: layer 0 = cls_token,
  pos_embed, patch_embed; block i = i + 1; the rest = depth + 1; scale = decay ** (depth + 1 - layer); no
  weight decay for 1-D parameters and model.no_weight_decay()) with weight decay 0.05 and decay 0.65, per name.
- mixup_target (timm.data.mixup) for labels [3, 0, 4, 1], 5 classes, lam 0.7, smoothing 0.1.
- cutmix boxes: timm's cutmix_bbox_and_lam (correct_lam) with np.random.randint replaced by given centres.
- losses: timm's LabelSmoothingCrossEntropy(0.1) and SoftTargetCrossEntropy on given logits.

Usage:  python3 tests/reference/make_finetune_golden.py [output.json]   (default: finetune_golden.json here)
"""
import json
import math
import os
import sys

import numpy as np
import torch
import timm.data.mixup as mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.models.vision_transformer import VisionTransformer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_golden as g  # noqa: E402

CLASSES = 5
LAYER_DECAY = 0.65
WEIGHT_DECAY = 0.05


def layer_id_for_vit(name, num_layers):  # MAE util/lr_decay.py get_layer_id_for_vit
    if name in ['cls_token', 'pos_embed']:
        return 0
    elif name.startswith('patch_embed'):
        return 0
    elif name.startswith('blocks'):
        return int(name.split('.')[1]) + 1
    else:
        return num_layers


def param_groups_lrd(model, weight_decay, no_weight_decay_list, layer_decay):  # per name: (lr_scale, wd)
    num_layers = len(model.blocks) + 1
    layer_scales = list(layer_decay ** (num_layers - i) for i in range(num_layers + 1))
    out = {}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        this_decay = 0. if (p.ndim == 1 or n in no_weight_decay_list) else weight_decay
        out[n] = [layer_scales[layer_id_for_vit(n, num_layers)], this_decay]
    return out


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "finetune_golden.json")
    golden = {}
    vit = VisionTransformer(img_size=g.IMG, patch_size=g.PATCH, in_chans=g.CH, embed_dim=g.D, depth=g.DEPTH,
                            num_heads=g.HEADS, mlp_ratio=g.MLP, qkv_bias=True, num_classes=CLASSES,
                            global_pool='avg', norm_layer=g.norm_layer)
    names = [n for n, _ in vit.named_parameters()]
    assert 'norm.weight' not in names and 'fc_norm.weight' in names
    with torch.no_grad():
        for n, p in vit.named_parameters():
            p.copy_(g.fill_values(n, tuple(p.shape)))
    vit.eval()
    with torch.no_grad():
        golden["logits"] = vit(g.make_imgs()).reshape(-1).tolist()
    golden["names"] = names
    golden["lrd"] = param_groups_lrd(vit, WEIGHT_DECAY, vit.no_weight_decay(), LAYER_DECAY)

    target = torch.tensor([3, 0, 4, 1])
    golden["mixup_target"] = mixup.mixup_target(target, CLASSES, lam=0.7, smoothing=0.1).reshape(-1).tolist()

    boxes = []
    for h, w, lam, cy, cx in [(224, 224, 0.7, 100, 30), (224, 224, 0.3, 5, 220), (28, 28, 0.55, 13, 0),
                              (9, 7, 0.2, 8, 3), (28, 28, 0.999, 27, 27)]:
        it = iter([cy, cx])
        saved = np.random.randint
        np.random.randint = lambda lo, hi, size=None: next(it)
        try:
            (yl, yh, xl, xh), lam_c = mixup.cutmix_bbox_and_lam((4, 3, h, w), lam, correct_lam=True)
        finally:
            np.random.randint = saved
        boxes.append([h, w, lam, cy, cx, int(yl), int(yh), int(xl), int(xh), float(lam_c)])
    golden["cutmix_boxes"] = boxes

    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0, 1.0], [0.1, 0.2, 3.0, -2.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([4, 2])
    golden["smoothing_loss"] = LabelSmoothingCrossEntropy(smoothing=0.1)(logits, labels).item()
    soft = mixup.mixup_target(labels, CLASSES, lam=0.6, smoothing=0.1).double()
    golden["soft_target_loss"] = SoftTargetCrossEntropy()(logits, soft).item()
    assert all(math.isfinite(v) for v in golden["logits"])
    with open(out_path, "w") as f:
        json.dump(golden, f, indent=0)
        f.write("\n")
    print("torch %s; logits[0:5] %s; %d lrd entries; boxes %s" % (torch.__version__, golden["logits"][:5],
                                                                   len(golden["lrd"]), boxes))


if __name__ == "__main__":
    main()
