"""featprune: layer-by-layer pruning of multilingual LLMs, calibrated on
translation demonstrations (Kim et al., EMNLP Findings 2024).

    import featprune_ext as fp
    fp.prune("model/", "pruned/", calib="mt:fr-en", data="corpus/", sparsity=0.5)   # a whole model
    fp.trim.trim("model/", "model-es-en/", langs="es,en")                            # its vocabulary
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
from .ops import accumulate_hessian, accumulate_stats, prune_rows_

__all__ = ["DiskFullError", "FeatpruneError", "InputError", "KernelError", "__version__", "accumulate_hessian",
           "accumulate_stats",
           "build_info", "prune", "prune_rows_", "trim"]


def build_info() -> dict:
    """How this installation was built: version, cuda (kernels compiled), cuda_archs, openmp,
    cpu_prune_path (the CPU prune_rows_ path for contiguous rows: "avx512", "avx2" or "portable";
    the environment variable FEATPRUNE_CPU_SIMD=avx2 or =0 narrows it), cuda_runtime (the CUDA
    runtime version the kernels link, e.g. "13.0"; None without them) and cuda_driver (the CUDA
    version the installed driver supports; None when no driver is found).
    Asking the driver's version does not initialise CUDA."""
    if _native is None:
        return {"version": __version__, "native": False, "cuda": False, "cuda_archs": "", "openmp": False,
                "cpu_prune_path": "reference", "cuda_runtime": None, "cuda_driver": None, "error": _import_error}
    from .ops import cuda_version_str

    info = dict(_native.build_info())
    info["native"] = True
    runtime, driver = _native.cuda_versions() if hasattr(_native, "cuda_versions") else (0, 0)
    info["cuda_runtime"] = cuda_version_str(runtime)
    info["cuda_driver"] = cuda_version_str(driver)
    return info


def __getattr__(name: str):
    if name == "prune":  # lazy: the whole-model entry point pulls in the engine and transformers
        from .api import prune

        return prune
    if name == "trim":  # the vocabulary trim subpackage: featprune_ext.trim.trim(model, out, langs=...)
        import importlib

        return importlib.import_module(".trim", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
