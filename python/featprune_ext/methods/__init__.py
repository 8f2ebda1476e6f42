"""Pruning methods: what statistics a method needs, and how it prunes a matrix from them.

Per block the engine runs one statistics pass; `method.collect_statistics(block_stats)` picks what
the method needs from it (a LinearStats per linear by default: per-bucket sum of x^2, token count,
max |x|; SparseGPT: the input Hessians), and `method.prune_matrix_(w, stats, ...)` prunes each
[out, in] weight view in place and returns a MatrixResult (entries zeroed, report notes). base.py.

Methods: Wanda (RMS of the base buckets), Contrastive (the paper's base * base / contrast),
Magnitude and Random (baselines), SparseGPT (sparsegpt.py: OBS updates of the kept weights).
Wanda and Contrastive take an OutlierProtection (top-P% RMS columns, absmax >= T) applied to the
matrices that read the hidden state. OWL (owl.py) sets each block's sparsity from its outlier ratio.

The registry maps a name to a factory (a method's `create`): its keyword parameters are the options
the method takes (seed, base_buckets, contrast_buckets, protection, sparsegpt_damp, ...), so an
option it does not take is refused, by get_method and, naming the flag, by featprune_ext.settings.
A new method: a module here with its PruneMethod subclass, listed in _BUILTIN below (or
`register_method(name, factory)` from outside the package).
"""
from __future__ import annotations

import inspect
from typing import Callable

from ..errors import InputError
from .base import LinearStats, MatrixResult, PruneMethod
from .baselines import Magnitude, Random
from .owl import OWL
from .protection import OutlierProtection, reads_hidden_state
from .sparsegpt import HessianStats, SparseGPT
from .wanda import Contrastive, Wanda, contrastive_norm

__all__ = ["OWL", "Contrastive", "HessianStats", "LinearStats", "Magnitude", "MatrixResult", "OutlierProtection",
           "PruneMethod", "Random", "SparseGPT", "Wanda", "contrastive_norm", "get_method", "method_names",
           "method_options", "method_reads_calibration", "parse_spec_components", "reads_hidden_state",
           "register_method"]

_BUILTIN = (Wanda, Contrastive, Magnitude, Random, SparseGPT)
_REGISTRY: dict[str, Callable[..., PruneMethod]] = {cls.name: cls.create for cls in _BUILTIN}


def register_method(name: str, factory: Callable[..., PruneMethod]) -> None:
    """Make `featprune prune --method NAME` build factory(**options); its keyword parameters are the
    options it takes (a **kwargs parameter takes any)."""
    _REGISTRY[name] = factory


def method_names() -> list[str]:
    return sorted(_REGISTRY)


def _factory(name: str) -> Callable[..., PruneMethod]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(method_names())}") from None


def method_options(name: str) -> frozenset[str] | _Any:
    """The options the method `name` takes: its factory's keyword parameters (everything for **kwargs)."""
    params = inspect.signature(_factory(name)).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return _ANY
    return frozenset(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))


def method_reads_calibration(name: str) -> bool:
    """False for a method that scores weights without activations (magnitude, random)."""
    owner = getattr(_factory(name), "__self__", None)  # a PruneMethod's create classmethod
    return bool(getattr(owner, "uses_statistics", True))


def get_method(name: str, **options) -> PruneMethod:
    """The method `name` built with `options`; InputError for an option it does not take."""
    takes = method_options(name)
    unknown = sorted(k for k in options if k not in takes)
    if unknown:
        raise InputError(f"method {name} takes no option {', '.join(unknown)}")
    return _factory(name)(**options)


class _Any:
    """Every option (a factory with **kwargs)."""

    def __contains__(self, item) -> bool:
        return True


_ANY = _Any()


def parse_spec_components(spec: str) -> list[str]:
    """The bucket names a calibration spec produces (one per `+` component)."""
    from ..data.calibration import parse_spec

    try:
        return [c.name for c in parse_spec(spec)]
    except ValueError as exc:
        raise InputError(str(exc)) from None
