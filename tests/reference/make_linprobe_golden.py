#!/usr/bin/env python3
"""Reference values for the MAE linear-probe protocol (src/dbot/eval/linprobe_mae.*, src/dbot/train/lars.*).

- lars: timm's Lars (timm.optim.Lars) set up to be MAE's util/lars.py at weight decay 0 (MAE's default for the
  linear probe): the 2-D weight in a group with always_adapt=True (trust ratio 0.001 |p| / |g|; timm adds
  eps 1e-8 to the denominator), the 1-D bias in a group without adaptation (plain momentum), momentum 0.9.
  Parameters after each of three steps with given gradients and lrs.
- probe: torch.nn.Sequential(BatchNorm1d(6, affine=False, eps=1e-6), Linear(6, 4)) as MAE's main_linprobe.py
  builds its head, trained 4 steps on given batches (train mode, CrossEntropyLoss) with that Lars; the losses,
  the final weight, bias, running mean and running var, and eval-mode logits of given test features.

Inputs are closed forms (sin), so the C++ test rebuilds them without this script.
Usage:  python3 tests/reference/make_linprobe_golden.py [output.json]  (default: linprobe_golden.json here)
"""
import json
import os
import sys

import torch
from timm.optim import Lars


def wave(n, a, b):  # the closed-form inputs: sin(a j + b), j = 0..n-1, float64
    return torch.sin(a * torch.arange(n, dtype=torch.float64) + b)


def mae_lars(weight, bias, lr):
    return Lars([{"params": [weight], "always_adapt": True}, {"params": [bias], "always_adapt": False}], lr=lr,
                momentum=0.9, weight_decay=0.0, trust_coeff=0.001)


def lars_golden():
    weight = wave(12, 0.9, 0.3).reshape(3, 4).clone().requires_grad_(True)
    bias = wave(3, 1.3, 0.2).clone().requires_grad_(True)
    opt = mae_lars(weight, bias, 0.0)
    out = {}
    for step, lr in enumerate([0.5, 2.0, 1.0]):
        weight.grad = wave(12, 0.37, step + 0.1).reshape(3, 4) * 0.01
        bias.grad = wave(3, 0.71, step + 0.4) * 0.1
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        out["lars_weight_%d" % step] = weight.detach().reshape(-1).tolist()
        out["lars_bias_%d" % step] = bias.detach().reshape(-1).tolist()
    return out


def probe_golden():
    torch.set_default_dtype(torch.float64)
    head = torch.nn.Sequential(torch.nn.BatchNorm1d(6, affine=False, eps=1e-6), torch.nn.Linear(6, 4))
    with torch.no_grad():
        head[1].weight.copy_(wave(24, 0.5, 0.7).reshape(4, 6))
        head[1].bias.zero_()
    opt = mae_lars(head[1].weight, head[1].bias, 0.0)
    criterion = torch.nn.CrossEntropyLoss()
    out = {"probe_losses": []}
    head.train()
    for step, lr in enumerate([0.1, 0.4, 0.3, 0.2]):
        features = wave(8 * 6, 0.23, step).reshape(8, 6) * 3.0 + wave(6, 0.9, step)  # [8, 6], shifted columns
        labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 0]).roll(step)  # unbalanced: the bias moves
        loss = criterion(head(features), labels)
        opt.zero_grad()
        loss.backward()
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        out["probe_losses"].append(loss.item())
    head.eval()
    test = wave(5 * 6, 0.41, 2.5).reshape(5, 6) * 2.0
    out["probe_weight"] = head[1].weight.detach().reshape(-1).tolist()
    out["probe_bias"] = head[1].bias.detach().reshape(-1).tolist()
    out["probe_running_mean"] = head[0].running_mean.reshape(-1).tolist()
    out["probe_running_var"] = head[0].running_var.reshape(-1).tolist()
    out["probe_test_logits"] = head(test).detach().reshape(-1).tolist()
    torch.set_default_dtype(torch.float32)
    return out


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "linprobe_golden.json")
    golden = {"torch": torch.__version__}
    golden.update(lars_golden())
    golden.update(probe_golden())
    with open(out_path, "w") as f:
        json.dump(golden, f)
        f.write("\n")
    print("torch %s; probe losses %s" % (torch.__version__, golden["probe_losses"]))


if __name__ == "__main__":
    main()
