"""featprune: layer-by-layer pruning of multilingual LLMs, calibrated on
translation demonstrations (Kim et al., EMNLP Findings 2024).

    import featprune_ext as fp
    fp.prune("model/", "pruned/", calib="mt:fr-en", data="corpus/", sparsity=0.5)   # a whole model
    fp.prune_rows_(w, col_scale, sparsity=0.5)                                       # the kernels
    fp.accumulate_stats(x, sumsq, count, token_mask=mask)

Importing this package never initialises CUDA, and `prune` (which needs transformers) is
imported only when first used.
"""

from __future__ import annotations

from ._native import import_error as _import_error
from ._native import native as _native
from ._version import __version__
from .errors import DiskFullError, FeatpruneError, InputError, KernelError
from .ops import accumulate_stats, prune_rows_

__all__ = ["DiskFullError", "FeatpruneError", "InputError", "KernelError", "__version__", "accumulate_stats",
           "build_info", "prune", "prune_rows_"]


def build_info() -> dict:
    """How this installation was built: version, cuda (kernels compiled), cuda_archs, openmp."""
    if _native is None:
        return {"version": __version__, "native": False, "cuda": False, "cuda_archs": "", "openmp": False,
                "error": _import_error}
    info = dict(_native.build_info())
    info["native"] = True
    return info


def __getattr__(name: str):
    if name == "prune":  # lazy: the whole-model entry point pulls in the engine and transformers
        from .api import prune

        return prune
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
