"""Wanda (Sun et al., 2023) and the paper's contrastive refinement (Kim et al., 2024)."""

from __future__ import annotations

import torch

from ..errors import InputError
from .base import PruneMethod
from .protection import OutlierProtection

__all__ = ["Contrastive", "Wanda", "contrastive_norm"]


class Wanda(PruneMethod):
    """|W| * ||x||: col_scale = sqrt(mean of x^2) over the base buckets (Sun et al., 2023).

    Calibrated on translation demonstrations this is the paper's method (Kim et al., 2024)."""

    name = "wanda"

    @classmethod
    def create(cls, *, base_buckets: list[str] | None = None, protection: OutlierProtection | None = None) -> Wanda:
        return cls(base_buckets=base_buckets, protection=protection)

    def column_scale(self, stats, weight):
        return stats.rms(self.base_buckets)


class Contrastive(PruneMethod):
    """The paper's refinement: norm_j = base_j * (base_j / contrast_j).

    base_j and contrast_j are the RMS of input feature j over the base buckets (e.g. the
    translation demonstrations) and the contrast buckets (e.g. code). Features large on both
    are shrunk, features large only on the demonstrations are boosted. A feature silent on the
    contrast set would divide by zero: contrast_j is floored at `eps` times the matrix's largest
    contrast RMS (or `eps` itself when every contrast RMS is zero).
    """

    name = "contrastive"

    def __init__(self, *, base_buckets: list[str], contrast_buckets: list[str], eps: float = 1e-6,
                 protection: OutlierProtection | None = None):
        if not base_buckets or not contrast_buckets:
            raise InputError("the contrastive method needs base and contrast calibration buckets")
        if set(base_buckets) & set(contrast_buckets):
            both = sorted(set(base_buckets) & set(contrast_buckets))
            raise InputError(f"a bucket cannot be both base and contrast: {both}")
        super().__init__(base_buckets=base_buckets, protection=protection)
        self.contrast_buckets = list(contrast_buckets)
        self.eps = float(eps)

    @classmethod
    def create(cls, *, base_buckets: list[str] | None = None, contrast_buckets: list[str] | None = None,
               protection: OutlierProtection | None = None) -> Contrastive:
        return cls(base_buckets=base_buckets or [], contrast_buckets=contrast_buckets or [], protection=protection)

    def prepare(self, bucket_names):
        super().prepare(bucket_names)
        for bucket in self.contrast_buckets:
            if bucket not in bucket_names:
                raise InputError(f"contrastive: no contrast bucket named {bucket!r}; have {bucket_names}")

    def bucket_groups(self):
        return [self.base_buckets, self.contrast_buckets]

    def column_scale(self, stats, weight):
        base = stats.rms(self.base_buckets)
        contrast = stats.rms(self.contrast_buckets)
        return contrastive_norm(base, contrast, self.eps)

    def describe(self):
        return {**super().describe(), "contrast_buckets": self.contrast_buckets, "eps": self.eps,
                "formula": "base * base / max(contrast, eps * max(contrast))"}


def contrastive_norm(base: torch.Tensor, contrast: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """base * (base / contrast), with contrast floored so a silent feature cannot divide by zero."""
    peak = float(contrast.max()) if contrast.numel() else 0.0
    floor = eps * peak if peak > 0 else eps
    return base * (base / contrast.clamp_min(floor))
