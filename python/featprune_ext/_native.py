"""Loads the compiled module once; `native` is None when it is unavailable."""

from __future__ import annotations

try:
    from . import _C as native
    import_error: str | None = None
except ImportError as exc:  # an uncompiled checkout, or a broken build
    native = None
    import_error = str(exc)
