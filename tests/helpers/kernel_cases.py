"""Shared helpers for the kernel tests: devices present, dtypes, input builders."""

from __future__ import annotations

import pytest
import torch

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DTYPE_IDS = ["fp32", "fp16", "bf16"]


def devices() -> list:
    """cpu always; cuda as a parameter that skips cleanly where there is no GPU."""
    has_cuda = torch.cuda.is_available()
    return [
        pytest.param("cpu", id="cpu"),
        pytest.param("cuda", id="cuda", marks=[pytest.mark.cuda,
                                               pytest.mark.skipif(not has_cuda, reason="no CUDA device")]),
    ]


def make_weight(rows: int, cols: int, dtype: torch.dtype, device: str, *, kind: str = "normal", seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    if kind == "normal":
        w = torch.randn(rows, cols, generator=g)
    elif kind == "quantized":  # few distinct values: heavy ties
        w = torch.randint(-3, 4, (rows, cols), generator=g).float() * 0.25
    elif kind == "constant":  # every score in a row equal
        w = torch.full((rows, cols), 0.5)
    else:
        raise ValueError(kind)
    return w.to(dtype).to(device)


def make_scale(cols: int, device: str, *, kind: str = "random", seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        s = torch.rand(cols, generator=g) * 4
    elif kind == "ones":
        s = torch.ones(cols)
    elif kind == "zero_cols":  # some features never fire: zero scores tie
        s = torch.rand(cols, generator=g)
        s[::3] = 0.0
    else:
        raise ValueError(kind)
    return s.to(device)
