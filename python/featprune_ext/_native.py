"""Loads the compiled module once; `native` is None when it is unavailable."""

from __future__ import annotations

# torch first: _C needs libgomp.so.1 and the wheel does not bundle one, so the loader reuses
# the copy torch has loaded (torch/lib/libgomp.so.1): one OpenMP runtime in the process.
import torch  # noqa: F401

try:
    from . import _C as native
    import_error: str | None = None
except ImportError as exc:  # an uncompiled checkout, or a broken build
    native = None
    import_error = str(exc)
