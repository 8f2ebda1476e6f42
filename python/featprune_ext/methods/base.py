"""What every method shares: the per-linear input statistics, the per-matrix result and the
PruneMethod interface.

Per block, the engine runs one statistics pass and asks the method for what it needs from it:
`method.collect_statistics(block_stats)` returns {linear name: statistics}; the default is
`block_stats.sums_of_squares()`, a LinearStats per linear (per-bucket sum of x^2, token count and
max |x| of its inputs); SparseGPT asks for `block_stats.hessians(...)` instead. Then, per matrix,
`method.prune_matrix_(w, stats, ...)` prunes the [out, in] weight view in place and returns a
MatrixResult: how many entries it zeroed and what the report says about the matrix. The default
prune_ is

    ops.prune_rows_(w, method.column_scale(stats, w), protect=method.protected_columns(stats, w, name))
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .. import ops
from ..errors import InputError
from .protection import OutlierProtection, reads_hidden_state

__all__ = ["LinearStats", "MatrixResult", "PruneMethod"]


@dataclass
class LinearStats:
    """Input statistics of one prunable linear, per calibration bucket."""

    sumsq: torch.Tensor  # float64 [K, F]: sum over counted tokens of x^2
    count: torch.Tensor  # int64 [K]: counted tokens
    absmax: torch.Tensor  # fp32 [K, F]: max |x|
    bucket_names: list[str]

    @classmethod
    def zeros(cls, features: int, bucket_names: list[str], device) -> LinearStats:
        k = len(bucket_names)
        # sumsq is float64: exact sums of the kernel's per-batch fp32 partials (engine._collect_stats)
        return cls(torch.zeros(k, features, dtype=torch.float64, device=device),
                   torch.zeros(k, dtype=torch.int64, device=device),
                   torch.zeros(k, features, dtype=torch.float32, device=device), list(bucket_names))

    def bucket_index(self, name: str) -> int:
        try:
            return self.bucket_names.index(name)
        except ValueError:
            raise InputError(f"no calibration bucket named {name!r}; have {self.bucket_names}") from None

    def rms(self, buckets: list[str] | None = None) -> torch.Tensor:
        """sqrt(mean over counted tokens of x^2) per feature, over the given buckets (default all)."""
        rows = slice(None) if buckets is None else [self.bucket_index(b) for b in buckets]
        total = self.sumsq[rows].sum(dim=0)
        tokens = int(self.count[rows].sum())
        if tokens == 0:
            raise RuntimeError("no calibration token reached this layer (all padding?)")
        return (total / tokens).sqrt().float()


@dataclass(frozen=True)
class MatrixResult:
    """What pruning one matrix did: the entries zeroed, and what the report says about it (e.g. the
    protected columns), merged into the matrix's entry of featprune.json."""

    pruned: int
    notes: dict = field(default_factory=dict)


class PruneMethod:
    """Base class. Subclasses set `name`, a `create` factory (the registry's, methods/__init__.py), and
    override column_scale, or prune_ (and collect_statistics when they need other statistics).

    `base_buckets`: the calibration buckets whose statistics score the weights (None: all).
    `protection`: optional outlier-column protection, applied to matrices reading the hidden state.
    """

    name = "base"
    uses_statistics = True  # False: scores need no activations (magnitude, random)

    def __init__(self, *, base_buckets: list[str] | None = None, protection: OutlierProtection | None = None):
        self.base_buckets = list(base_buckets) if base_buckets else None
        self.protection = protection if protection is not None and protection.active else None

    @classmethod
    def create(cls, **options) -> PruneMethod:
        """The registry's factory: its keyword parameters are the options the method takes (an option
        it does not name is refused by settings.py and get_method)."""
        return cls(**options)

    @property
    def needs_calibration(self) -> bool:
        """False: the engine skips the forward passes entirely."""
        return self.uses_statistics or self.protection is not None

    def prepare(self, bucket_names: list[str]) -> None:
        """Called once before pruning with the calibration buckets; raise InputError if unusable."""
        for bucket in self.base_buckets or []:
            if bucket not in bucket_names:
                raise InputError(f"{self.name}: no calibration bucket named {bucket!r}; have {bucket_names}")

    def collect_statistics(self, block_stats) -> dict:
        """{linear name: statistics} of one block, from the engine's statistics pass (engine/run.py's
        BlockStatistics): a LinearStats per linear by default."""
        return block_stats.sums_of_squares()

    def bucket_groups(self) -> list[list[str] | None]:
        """The bucket groups the scores read (None: all buckets). A matrix for which one group saw no
        calibration token (an MoE expert never routed to) is pruned by magnitude (engine/moe.py)."""
        return [self.base_buckets]

    def check_pattern(self, n: int, m: int) -> None:
        """Called before any work with the N:M pattern (0, 0 when unstructured); InputError if unusable."""

    def column_scale(self, stats: LinearStats | None, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def protected_columns(self, stats: LinearStats | None, weight: torch.Tensor, name: str = "") -> torch.Tensor | None:
        """Outlier columns of matrices that read the hidden state (None: protect nothing)."""
        if self.protection is None or stats is None or not reads_hidden_state(name):
            return None
        base = self.base_buckets
        absmax = stats.absmax[[stats.bucket_index(b) for b in base]] if base else stats.absmax
        return self.protection.columns(stats.rms(base), absmax.amax(dim=0)).to(weight.device)

    def prune_matrix_(self, weight: torch.Tensor, stats, *, sparsity: float | None = None, n: int = 0, m: int = 0,
                      name: str = "") -> MatrixResult:
        """Prune one matrix (the engine's call): prune_ with this method's protected columns, and the
        result the report gets."""
        protect = self.protected_columns(stats, weight, name)
        pruned = self.prune_(weight, stats, sparsity=sparsity, n=n, m=m, name=name, protect=protect)
        return MatrixResult(pruned, self.protection_notes(protect))

    def prune_(self, weight: torch.Tensor, stats: LinearStats | None, *, sparsity: float | None = None,
               n: int = 0, m: int = 0, name: str = "", protect: torch.Tensor | None = None) -> int:
        """Prune `weight` ([out, in] view, modified in place); returns the number of zeroed entries.
        protect: columns never pruned (None: this method's protected_columns)."""
        scale = self.column_scale(stats, weight).to(device=weight.device, dtype=torch.float32).contiguous()
        if protect is None:
            protect = self.protected_columns(stats, weight, name)
        return ops.prune_rows_(weight, scale, sparsity=sparsity, n=n, m=m, protect=protect)

    def protection_notes(self, protect: torch.Tensor | None) -> dict:
        """The report's note on a matrix's protected columns (nothing without protection)."""
        if self.protection is None:
            return {}
        columns = [] if protect is None else torch.nonzero(protect).flatten().tolist()
        return {"protected_columns": len(columns), "protected": columns}

    def describe(self) -> dict:
        info = {"name": self.name}
        if self.base_buckets:
            info["base_buckets"] = self.base_buckets
        if self.protection is not None:
            info["protection"] = self.protection.describe()
        return info
