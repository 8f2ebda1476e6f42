"""Pruning methods: how a matrix's per-column scale (and protected columns) are derived.

The engine gives every prunable linear a LinearStats (per-bucket sum of x^2, token count
and max |x| of its inputs) and calls `method.prune_(...)` on the [out, in] weight view.
A method decides which buckets it uses (`base_buckets`); the default prune_ is

    ops.prune_rows_(w, method.column_scale(stats, w), protect=method.protected_columns(stats, w, name))

Methods: Wanda (RMS of the base buckets), Contrastive (the paper's base * base / contrast),
Magnitude and Random (baselines). Any of them takes an OutlierProtection (top-P% RMS
columns, absmax >= T) applied to the matrices that read the hidden state.
Register new methods with `register_method(name, factory)` so the CLI can build them.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable

import torch

from . import ops
from .checkpoint import InputError

__all__ = ["Contrastive", "LinearStats", "Magnitude", "OutlierProtection", "PruneMethod", "Random", "Wanda",
           "contrastive_norm", "get_method", "method_names", "reads_hidden_state", "register_method"]


@dataclass
class LinearStats:
    """Input statistics of one prunable linear, per calibration bucket."""

    sumsq: torch.Tensor  # float64 [K, F]: sum over counted tokens of x^2
    count: torch.Tensor  # int64 [K]: counted tokens
    absmax: torch.Tensor  # fp32 [K, F]: max |x|
    bucket_names: list[str]

    @classmethod
    def zeros(cls, features: int, bucket_names: list[str], device) -> "LinearStats":
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


class PruneMethod:
    """Base class. Subclasses set `name` and override column_scale / prune_.

    `base_buckets`: the calibration buckets whose statistics score the weights (None: all).
    `protection`: optional outlier-column protection, applied to matrices reading the hidden state.
    After each prune_, `matrix_notes[name]` holds what the report should say about that matrix.
    """

    name = "base"
    uses_statistics = True  # False: scores need no activations (magnitude, random)

    def __init__(self, *, base_buckets: list[str] | None = None, protection: "OutlierProtection | None" = None):
        self.base_buckets = list(base_buckets) if base_buckets else None
        self.protection = protection if protection is not None and protection.active else None
        self.matrix_notes: dict[str, dict] = {}

    @property
    def needs_calibration(self) -> bool:
        """False: the engine skips the forward passes entirely."""
        return self.uses_statistics or self.protection is not None

    def prepare(self, bucket_names: list[str]) -> None:
        """Called once before pruning with the calibration buckets; raise InputError if unusable."""
        for bucket in self.base_buckets or []:
            if bucket not in bucket_names:
                raise InputError(f"{self.name}: no calibration bucket named {bucket!r}; have {bucket_names}")

    def column_scale(self, stats: LinearStats | None, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def protected_columns(self, stats: LinearStats | None, weight: torch.Tensor, name: str = "") -> torch.Tensor | None:
        """Outlier columns of matrices that read the hidden state (None: protect nothing)."""
        if self.protection is None or stats is None or not reads_hidden_state(name):
            return None
        base = self.base_buckets
        absmax = stats.absmax[[stats.bucket_index(b) for b in base]] if base else stats.absmax
        return self.protection.columns(stats.rms(base), absmax.amax(dim=0)).to(weight.device)

    def prune_(self, weight: torch.Tensor, stats: LinearStats | None, *, sparsity: float | None = None,
               n: int = 0, m: int = 0, name: str = "") -> int:
        """Prune `weight` ([out, in] view, modified in place); returns the number of zeroed entries."""
        scale = self.column_scale(stats, weight).to(device=weight.device, dtype=torch.float32).contiguous()
        protect = self.protected_columns(stats, weight, name)
        self._note_protection(name, protect)
        return ops.prune_rows_(weight, scale, sparsity=sparsity, n=n, m=m, protect=protect)

    def _note_protection(self, name: str, protect: torch.Tensor | None) -> None:
        if self.protection is not None:
            columns = [] if protect is None else torch.nonzero(protect).flatten().tolist()
            self.matrix_notes[name] = {"protected_columns": len(columns), "protected": columns}

    def describe(self) -> dict:
        info = {"name": self.name}
        if self.base_buckets:
            info["base_buckets"] = self.base_buckets
        if self.protection is not None:
            info["protection"] = self.protection.describe()
        return info


class Wanda(PruneMethod):
    """|W| * ||x||: col_scale = sqrt(mean of x^2) over the base buckets (Sun et al., 2023).

    Calibrated on translation demonstrations this is the paper's method (Kim et al., 2024)."""

    name = "wanda"

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
                 protection: "OutlierProtection | None" = None):
        if not base_buckets or not contrast_buckets:
            raise InputError("the contrastive method needs base and contrast calibration buckets")
        if set(base_buckets) & set(contrast_buckets):
            raise InputError(f"a bucket cannot be both base and contrast: {sorted(set(base_buckets) & set(contrast_buckets))}")
        super().__init__(base_buckets=base_buckets, protection=protection)
        self.contrast_buckets = list(contrast_buckets)
        self.eps = float(eps)

    def prepare(self, bucket_names):
        super().prepare(bucket_names)
        for bucket in self.contrast_buckets:
            if bucket not in bucket_names:
                raise InputError(f"contrastive: no contrast bucket named {bucket!r}; have {bucket_names}")

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


class Magnitude(PruneMethod):
    """|W| alone: no calibration needed (unless outlier protection asks for statistics)."""

    name = "magnitude"
    uses_statistics = False

    def column_scale(self, stats, weight):
        return torch.ones(weight.shape[1], dtype=torch.float32, device=weight.device)


class Random(PruneMethod):
    """A uniformly random mask with exactly the target count per row (or per N:M group).

    Scores come from a generator seeded by (seed, matrix name), so a matrix gets the same
    mask whatever order the blocks run in, and a resumed run matches an uninterrupted one.
    """

    name = "random"
    uses_statistics = False

    def __init__(self, seed: int = 0, *, protection: "OutlierProtection | None" = None):
        super().__init__(protection=protection)
        self.seed = int(seed)

    def prune_(self, weight, stats, *, sparsity=None, n=0, m=0, name=""):
        gen = torch.Generator(device="cpu").manual_seed(self.seed * 1_000_003 + zlib.crc32(name.encode()))
        scores = torch.rand(weight.shape, generator=gen, dtype=torch.float32).to(weight.device)
        mask = torch.zeros(weight.shape, dtype=torch.bool, device=weight.device)
        ones = torch.ones(weight.shape[1], dtype=torch.float32, device=weight.device)
        protect = self.protected_columns(stats, weight, name)
        self._note_protection(name, protect)
        pruned = ops.prune_rows_(scores, ones, sparsity=sparsity, n=n, m=m, protect=protect, mask_out=mask)
        weight.masked_fill_(mask, 0)
        return pruned

    def describe(self):
        return {**super().describe(), "seed": self.seed}


_REGISTRY: dict[str, Callable[..., PruneMethod]] = {
    "wanda": lambda seed=0, base_buckets=None, protection=None, **_: Wanda(base_buckets=base_buckets,
                                                                           protection=protection),
    "contrastive": lambda seed=0, base_buckets=None, contrast_buckets=None, protection=None, **_: Contrastive(
        base_buckets=base_buckets or [], contrast_buckets=contrast_buckets or [], protection=protection),
    "magnitude": lambda seed=0, protection=None, **_: Magnitude(protection=protection),
    "random": lambda seed=0, protection=None, **_: Random(seed, protection=protection),
}


def register_method(name: str, factory: Callable[..., PruneMethod]) -> None:
    """Make `featprune prune --method NAME` build factory(seed=..., **options)."""
    _REGISTRY[name] = factory


def method_names() -> list[str]:
    return sorted(_REGISTRY)


def get_method(name: str, **options) -> PruneMethod:
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(method_names())}") from None
    return factory(**options)


# --- the paper's refinements (Kim et al., 2024) -------------------------------------------

# Last name component of the matrices whose input is the residual-stream hidden state (they
# follow a layer norm). Outlier features live there; o_proj/down_proj read other spaces.
READS_HIDDEN_STATE = frozenset({
    "q_proj", "k_proj", "v_proj", "qkv_proj", "W_pack", "query_key_value", "query", "key", "value",
    "gate_proj", "up_proj", "gate_up_proj", "c_attn", "c_fc", "fc1", "dense_h_to_4h", "w1", "w3",
})


def reads_hidden_state(matrix_name: str) -> bool:
    """True for matrices that read the hidden state, from their parameter or module name."""
    parts = matrix_name.split(".")
    if parts and parts[-1] in ("weight", "bias"):
        parts = parts[:-1]
    return bool(parts) and parts[-1] in READS_HIDDEN_STATE


@dataclass
class OutlierProtection:
    """Columns never pruned: the top `top_percent`% input features by RMS, and those whose max |x|
    reaches `absmax_threshold` (LLM.int8() used 6.0), in matrices that read the hidden state."""

    top_percent: float = 0.0
    absmax_threshold: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.top_percent < 100.0:
            raise InputError(f"--protect-top must be a percentage in [0, 100), got {self.top_percent}")
        if self.absmax_threshold is not None and not self.absmax_threshold > 0:
            raise InputError(f"--protect-absmax must be > 0, got {self.absmax_threshold}")

    @property
    def active(self) -> bool:
        return self.top_percent > 0 or self.absmax_threshold is not None

    def columns(self, rms: torch.Tensor, absmax: torch.Tensor) -> torch.Tensor:
        protect = torch.zeros_like(rms, dtype=torch.bool)
        top = int(rms.numel() * self.top_percent / 100.0)
        if top > 0:
            protect[torch.topk(rms, top).indices] = True
        if self.absmax_threshold is not None:
            protect |= absmax >= self.absmax_threshold
        return protect

    def describe(self) -> dict:
        return {"top_percent": self.top_percent, "absmax_threshold": self.absmax_threshold}


def parse_spec_components(spec: str) -> list[str]:
    """The bucket names a calibration spec produces (one per `+` component)."""
    from .calibration import parse_spec

    try:
        return [c.name for c in parse_spec(spec)]
    except ValueError as exc:
        raise InputError(str(exc)) from None
