"""The compiled module of an installed featprune wheel, checked without torch (numpy only).

    python .ci/wheel_native_check.py

For Pythons this machine has no torch for (a CPU torch lies on disk for CPython 3.11 only;
PyPI's Linux torch is a multi-GB CUDA build): loads featprune_ext/_C from site-packages
without importing the package (whose __init__ imports torch), prints build_info(), and runs
both CPU kernels on numpy arrays against a numpy oracle: prune_rows (unstructured and 2:4;
the k smallest |w| * scale per row, ties to the lower column) and accumulate_stats (sums of
squares, counts and max |x| over unmasked tokens). Exit status 1 on any difference.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import sysconfig
from pathlib import Path

import numpy as np


def load_native():
    package = Path(sysconfig.get_paths()["platlib"]) / "featprune_ext"
    (path,) = package.glob("_C.*.so")
    loader = importlib.machinery.ExtensionFileLoader("featprune_ext._C", str(path))
    spec = importlib.util.spec_from_file_location("featprune_ext._C", path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def oracle_prune(w, scale, k=0, n=0, m=0):
    score = np.abs(w) * scale  # fp32, one multiply, as the kernels
    mask = np.zeros(w.shape, dtype=bool)
    groups = [(0, w.shape[1], k)] if not m else [(c, c + m, m - n) for c in range(0, w.shape[1], m)]
    for r in range(w.shape[0]):
        for c0, c1, drop in groups:
            order = np.argsort(score[r, c0:c1], kind="stable")  # ties: lower column first
            mask[r, c0 + order[:drop]] = True
    return mask


def check_prune(native, rows, cols, **pattern):
    rng = np.random.default_rng(rows * cols)
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    scale = (rng.random(cols) * 4).astype(np.float32)
    want = oracle_prune(w, scale, **pattern)
    mask = np.zeros((rows, cols), dtype=np.uint8)
    got = w.copy()
    native.prune_rows(device=0, w=got.ctypes.data, dtype=0, rows=rows, cols=cols, row_stride=cols, col_stride=1,
                      col_scale=scale.ctypes.data, protect=0, mask_out=mask.ctypes.data, mask_row_stride=cols,
                      mask_col_stride=1, k=pattern.get("k", 0), n=pattern.get("n", 0), m=pattern.get("m", 0),
                      stream=0)
    assert np.array_equal(mask.astype(bool), want), f"prune_rows mask differs ({rows}x{cols}, {pattern})"
    assert np.array_equal(got, np.where(want, np.float32(0), w)), "prune_rows weights differ"


def check_stats(native, tokens, features):
    rng = np.random.default_rng(tokens + features)
    x = rng.standard_normal((tokens, features)).astype(np.float32)
    keep = (rng.random(tokens) > 0.25).astype(np.uint8)
    sumsq = np.zeros(features, dtype=np.float32)
    absmax = np.zeros(features, dtype=np.float32)
    count = np.zeros(1, dtype=np.int64)
    native.accumulate_stats(device=0, x=x.ctypes.data, dtype=0, tokens=tokens, features=features, row_stride=features,
                            col_stride=1, token_mask=keep.ctypes.data, sumsq=sumsq.ctypes.data,
                            absmax=absmax.ctypes.data, count=count.ctypes.data, stream=0)
    kept = x[keep.astype(bool)].astype(np.float64)
    assert count[0] == len(kept), (count, len(kept))
    assert np.array_equal(absmax, np.abs(kept).max(axis=0).astype(np.float32)), "absmax differs"
    exact = (kept ** 2).sum(axis=0)
    assert np.all(np.abs(sumsq - exact) <= 1e-5 * exact + 1e-6), "sumsq differs beyond rounding"


def main() -> int:
    native = load_native()
    print(f"python {sys.version.split()[0]}: {native.__file__}")
    print(native.build_info())
    for rows, cols, pattern in [(7, 769, {"k": 384}), (3, 4096, {"k": 2048}), (5, 512, {"n": 2, "m": 4})]:
        check_prune(native, rows, cols, **pattern)
    check_stats(native, 300, 257)
    print("native kernels match the numpy oracle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
