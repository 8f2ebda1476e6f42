"""One block's statistics pass, offered to the method (PruneMethod.collect_statistics), which asks for
what it needs: per-feature sums of squares (stats.py) or Hessians (hessian.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..methods import LinearStats
from .distributed import DistContext
from .hessian import check_finite_hessians, collect_hessians
from .stats import check_finite_stats, collect_stats

__all__ = ["BlockStatistics"]


@dataclass
class BlockStatistics:
    """One block's statistics pass, offered to the method (PruneMethod.collect_statistics), which asks
    for the statistics it needs: sums_of_squares() or hessians(). Either runs the block over every
    calibration batch with hooks on the prunable linears, all-reduces across torchrun ranks, and
    raises NonFiniteError naming the first linear whose inputs hold NaN or inf."""

    index: int
    prefix: str
    block: torch.nn.Module
    linears: list
    calls: list
    hidden: list
    batches: list
    bucket_names: list[str]
    device: torch.device
    dist: DistContext
    call_orders: dict | None
    dtype: torch.dtype

    def sums_of_squares(self) -> dict[str, LinearStats]:
        """A LinearStats per linear: per-bucket sums of x^2, token counts and max |x| (stats.py)."""
        stats = collect_stats(self.block, self.linears, self.calls, self.hidden, self.batches, self.bucket_names,
                              self.device, call_orders=self.call_orders)
        self.dist.all_reduce_([t for st in stats.values() for t in (st.sumsq, st.count)],
                              [st.absmax for st in stats.values()])
        # NaN or inf in a linear's inputs: name the block and the linear, and the likely cause
        check_finite_stats(self.prefix, self.index, self.linears, stats, self.dtype)
        return stats

    def hessians(self, base_buckets: list[str] | None) -> dict:
        """A HessianStats per linear, shared by the linears reading the same input, over `base_buckets`
        (None: all) (hessian.py)."""
        stats = collect_hessians(self.block, self.linears, self.calls, self.hidden, self.batches, self.bucket_names,
                                 base_buckets, self.device, self.dist, call_orders=self.call_orders)
        check_finite_hessians(self.prefix, self.index, stats, self.dtype)
        return stats
