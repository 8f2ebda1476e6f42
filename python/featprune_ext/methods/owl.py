"""OWL (Yin et al., 2024): outlier-weighted layer-wise sparsity.

Blocks with more outliers keep more weights. For each transformer block, on the dense model:

- score every weight of the block's pruned matrices with Wanda's |W_ij| * ||X_j|| (RMS of input
  feature j over the non-padding calibration tokens of the method's base buckets);
- the block's outlier ratio D_i is the fraction of those scores, over all the block's matrices
  together, above M times their mean (OWL's `check_outlier_mean`, M = `m`, default 5);
- ratios are mapped linearly onto a spread of 2 * lambda (default 0.08): the block with the most
  outliers gets the lowest sparsity, the one with the fewest the highest, then all are shifted so
  that the mean sparsity equals the target.

One deliberate difference: OWL's code shifts so that the unweighted mean over blocks is the
target; here the mean is weighted by each block's number of pruned parameters, so the model's
overall sparsity is the target even when blocks differ in size (the two coincide when every block
has the same parameter count, as in the dense decoders OWL was run on). Blocks with no pruned
matrix keep the target and weigh nothing. The per-block sparsity then goes through the method's
usual per-row count (floor(in_features * s) per row), so the achieved overall sparsity is below the
target by less than 1 / (smallest in_features).

How the streaming engine gets every block's ratio before pruning block 0 is engine/layerwise.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import InputError

__all__ = ["OWL", "layer_sparsities", "outlier_ratio"]


@dataclass(frozen=True)
class OWL:
    """Layer-wise sparsity settings: outlier threshold `m` (M) and maximum deviation `lam` (lambda)."""

    m: float = 5.0
    lam: float = 0.08

    def __post_init__(self) -> None:
        if isinstance(self.m, bool) or not isinstance(self.m, (int, float)) or not math.isfinite(self.m) or self.m <= 0:
            raise InputError(f"--owl-m must be a positive number, got {self.m!r}")
        if (isinstance(self.lam, bool) or not isinstance(self.lam, (int, float)) or not math.isfinite(self.lam)
                or not 0 <= self.lam < 0.5):
            raise InputError(f"--owl-lambda must be in [0, 0.5), got {self.lam!r}")

    def check(self, method, sparsity, pattern) -> None:
        """InputError when OWL cannot apply: N:M patterns, or a method that reads no activations."""
        if pattern is not None:
            raise InputError("--layerwise owl sets a different sparsity per block, which an N:M pattern cannot "
                             "express: use --sparsity")
        if not method.uses_statistics:
            raise InputError(f"--layerwise owl scores weights with calibration activations; --method {method.name} "
                             "reads none (use wanda, contrastive or sparsegpt)")

    def fingerprint(self) -> str:
        return f"owl-m{self.m!r}-l{self.lam!r}"

    def describe(self) -> dict:
        return {"method": "owl", "m": self.m, "lambda": self.lam,
                "score": "|W| * RMS(x) over the base buckets, dense model",
                "mean": "weighted by the pruned parameters of each block"}


def outlier_ratio(scores: list[torch.Tensor], m: float) -> float:
    """Fraction of all entries of `scores` (together) above m times their mean."""
    total = sum(s.numel() for s in scores)
    if total == 0:
        return 0.0
    mean = sum(float(s.double().sum()) for s in scores) / total
    threshold = m * mean
    return sum(int((s > threshold).sum()) for s in scores) / total


def layer_sparsities(ratios: list[float | None], params: list[int], sparsity: float, lam: float) -> list[float]:
    """Per-block sparsity: OWL's linear map of the outlier ratios onto [-lam, lam] around the target,
    shifted so the parameter-weighted mean is `sparsity`. None ratios (blocks with nothing to prune)
    keep `sparsity`. InputError when a block would leave [0, 1)."""
    live = [i for i, r in enumerate(ratios) if r is not None and params[i] > 0]
    out = [float(sparsity)] * len(ratios)
    if not live:
        return out
    r = torch.tensor([ratios[i] for i in live], dtype=torch.float64)
    p = torch.tensor([params[i] for i in live], dtype=torch.float64)
    spread = float(r.max() - r.min())
    raw = torch.zeros_like(r) if spread == 0 else lam - 2 * lam * (r - r.min()) / spread  # most outliers: -lam
    shifted = sparsity + raw - float((raw * p).sum() / p.sum())
    for i, s in zip(live, shifted.tolist()):
        if not 0 <= s < 1:
            raise InputError(f"OWL puts block {i} at sparsity {s:.4f}, outside [0, 1): lower --owl-lambda "
                             f"(now {lam}) or move --sparsity (now {sparsity}) away from 0 and 1")
        out[i] = s
    return out
