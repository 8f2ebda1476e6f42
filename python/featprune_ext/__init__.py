"""featprune: layer-by-layer pruning of multilingual LLMs, calibrated on
translation demonstrations (Kim et al., EMNLP Findings 2024).

Importing this package never initialises CUDA.
"""

from __future__ import annotations

from ._native import import_error as _import_error
from ._native import native as _native
from .ops import accumulate_stats, prune_rows_

__version__ = "0.1.0"
__all__ = ["__version__", "accumulate_stats", "build_info", "prune_rows_"]


def build_info() -> dict:
    """How this installation was built: version, cuda (kernels compiled), cuda_archs, openmp."""
    if _native is None:
        return {"version": __version__, "native": False, "cuda": False, "cuda_archs": "", "openmp": False,
                "error": _import_error}
    info = dict(_native.build_info())
    info["native"] = True
    return info
