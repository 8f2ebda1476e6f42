"""Pruning methods: how a matrix's per-column scale (and protected columns) are derived.

The engine gives every prunable linear a LinearStats (per-bucket sum of x^2, token count
and max |x| of its inputs) and calls `method.prune_(...)` on the [out, in] weight view.
A method decides which buckets it uses (`base_buckets`); the default prune_ is

    ops.prune_rows_(w, method.column_scale(stats, w), protect=method.protected_columns(stats, w, name))

Methods: Wanda (RMS of the base buckets), Contrastive (the paper's base * base / contrast),
Magnitude and Random (baselines). Any of them takes an OutlierProtection (top-P% RMS
columns, absmax >= T) applied to the matrices that read the hidden state. SparseGPT
(sparsegpt.py) gets a HessianStats per linear instead (its `statistics` is "hessian") and
updates the kept weights. OWL (owl.py) sets each block's sparsity from its outlier ratio.
Register new methods with `register_method(name, factory)` so the CLI can build them.
"""
from __future__ import annotations

from typing import Callable

from ..errors import InputError
from .base import LinearStats, PruneMethod
from .baselines import Magnitude, Random
from .owl import OWL
from .protection import OutlierProtection, reads_hidden_state
from .sparsegpt import HessianStats, SparseGPT
from .wanda import Contrastive, Wanda, contrastive_norm

__all__ = ["OWL", "Contrastive", "HessianStats", "LinearStats", "Magnitude", "OutlierProtection", "PruneMethod",
           "Random", "SparseGPT", "Wanda", "contrastive_norm", "get_method", "method_names", "parse_spec_components",
           "reads_hidden_state", "register_method"]


_REGISTRY: dict[str, Callable[..., PruneMethod]] = {
    "wanda": lambda seed=0, base_buckets=None, protection=None, **_: Wanda(base_buckets=base_buckets,
                                                                           protection=protection),
    "contrastive": lambda seed=0, base_buckets=None, contrast_buckets=None, protection=None, **_: Contrastive(
        base_buckets=base_buckets or [], contrast_buckets=contrast_buckets or [], protection=protection),
    "magnitude": lambda seed=0, protection=None, **_: Magnitude(protection=protection),
    "random": lambda seed=0, protection=None, **_: Random(seed, protection=protection),
    "sparsegpt": lambda seed=0, base_buckets=None, protection=None, sparsegpt_damp=0.01, sparsegpt_blocksize=128,
    **_: _sparsegpt(base_buckets, protection, sparsegpt_damp, sparsegpt_blocksize),
}


def _sparsegpt(base_buckets, protection, damp, blocksize) -> SparseGPT:
    if protection is not None and protection.active:
        raise InputError("--protect-top/--protect-absmax are not supported with --method sparsegpt")
    return SparseGPT(base_buckets=base_buckets, damp=damp, blocksize=blocksize)


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


def parse_spec_components(spec: str) -> list[str]:
    """The bucket names a calibration spec produces (one per `+` component)."""
    from ..data.calibration import parse_spec

    try:
        return [c.name for c in parse_spec(spec)]
    except ValueError as exc:
        raise InputError(str(exc)) from None
