# The one place the version is written: pyproject.toml reads it (scikit-build-core regex provider).
__version__ = "0.1.0"


def versions() -> dict:
    """Versions of featprune and the libraries whose behaviour its results depend on."""
    import platform
    from importlib import metadata

    import torch

    out = {"featprune": __version__, "torch": torch.__version__, "python": platform.python_version()}
    for name in ("transformers", "safetensors"):  # from package metadata: importing transformers costs seconds
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out
