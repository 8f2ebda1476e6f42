# The one place the version is written: pyproject.toml reads it (scikit-build-core regex provider).
__version__ = "0.1.0"


def versions() -> dict:
    """Versions of featprune and the libraries whose behaviour its results depend on."""
    import platform

    import torch

    out = {"featprune": __version__, "torch": torch.__version__, "python": platform.python_version()}
    for name in ("transformers", "safetensors"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            pass
    return out
