"""Baselines that need no activations: magnitude and random masks."""

from __future__ import annotations

import zlib

import torch

from .. import ops
from .base import PruneMethod
from .protection import OutlierProtection

__all__ = ["Magnitude", "Random"]


class Magnitude(PruneMethod):
    """|W| alone: no calibration needed."""

    name = "magnitude"
    uses_statistics = False

    @classmethod
    def create(cls) -> Magnitude:
        return cls()

    def column_scale(self, stats, weight):
        return torch.ones(weight.shape[1], dtype=torch.float32, device=weight.device)


class Random(PruneMethod):
    """A uniformly random mask with exactly the target count per row (or per N:M group).

    Scores come from a generator seeded by (seed, matrix name), so a matrix gets the same
    mask whatever order the blocks run in, and a resumed run matches an uninterrupted one.
    """

    name = "random"
    uses_statistics = False

    def __init__(self, seed: int = 0, *, protection: OutlierProtection | None = None):
        super().__init__(protection=protection)
        self.seed = int(seed)

    @classmethod
    def create(cls, *, seed: int = 0) -> Random:
        return cls(seed)

    def prune_(self, weight, stats, *, sparsity=None, n=0, m=0, name="", protect=None):
        gen = torch.Generator(device="cpu").manual_seed(self.seed * 1_000_003 + zlib.crc32(name.encode()))
        scores = torch.rand(weight.shape, generator=gen, dtype=torch.float32).to(weight.device)
        mask = torch.zeros(weight.shape, dtype=torch.bool, device=weight.device)
        ones = torch.ones(weight.shape[1], dtype=torch.float32, device=weight.device)
        if protect is None:
            protect = self.protected_columns(stats, weight, name)
        pruned = ops.prune_rows_(scores, ones, sparsity=sparsity, n=n, m=m, protect=protect, mask_out=mask)
        weight.masked_fill_(mask, 0)
        return pruned

    def describe(self):
        return {**super().describe(), "seed": self.seed}
