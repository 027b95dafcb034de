#!/usr/bin/env python3
"""Writes tests/data/safetensors/python.safetensors with Python's `safetensors` package (the reference
implementation), for test_safetensors.cpp: dbot must read it to these exact values and, given the same
tensors, write the same bytes.

Usage: python3 tests/reference/make_safetensors_golden.py [OUT]
The committed file: safetensors 0.8.0 and torch 2.15.0 from PyPI (the bytes do not depend on either
version as long as the format is unchanged).

Tensors (hand-checkable; test_safetensors.cpp rebuilds them from these formulas):
  f32     F32  [2, 3]  arange(6) * 0.5 - 1
  f64     F64  [2]     [1/3, -2.5]
  bf16    BF16 [3]     [1.5, -2, 0.25]
  f16     F16  [2]     [0.1, 65504] (0.1 rounded to half)
  i64     I64  [2]     [7, -9]
  i32     I32  [1]     [-123456]
  i16     I16  [2]     [-2, 300]
  i8      I8   [2]     [-128, 127]
  u8      U8   [4]     [0, 1, 254, 255]
  bool    BOOL [3]     [True, False, True]
  empty   F32  [0, 3]
  scalar  F32  []      42
metadata: {"format": "pt"} (one key: the reference writes a metadata map in hash order)
"""
import os
import sys

import torch
from safetensors.torch import save_file


def tensors():
    return {
        "f32": torch.arange(6, dtype=torch.float32).reshape(2, 3) * 0.5 - 1,
        "f64": torch.tensor([1 / 3, -2.5], dtype=torch.float64),
        "bf16": torch.tensor([1.5, -2, 0.25], dtype=torch.bfloat16),
        "f16": torch.tensor([0.1, 65504], dtype=torch.float16),
        "i64": torch.tensor([7, -9], dtype=torch.int64),
        "i32": torch.tensor([-123456], dtype=torch.int32),
        "i16": torch.tensor([-2, 300], dtype=torch.int16),
        "i8": torch.tensor([-128, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 1, 254, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(42.0),
    }


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "data", "safetensors", "python.safetensors")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    save_file(tensors(), out, metadata={"format": "pt"})
    print(f"wrote {out} ({os.path.getsize(out)} bytes)")


if __name__ == "__main__":
    main()
