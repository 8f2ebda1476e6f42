"""The one error hierarchy of featprune.

The CLI maps these to exit codes (see featprune_ext.cli.main): InputError -> 2,
every other failure -> 1. Library code raises InputError for anything the user can
fix by changing the input (model directory, data, options).
"""

from __future__ import annotations

__all__ = ["DiskFullError", "FeatpruneError", "InputError", "KernelError", "MissingInputError"]


class FeatpruneError(Exception):
    """Base class of every error featprune raises on purpose."""


class InputError(FeatpruneError, ValueError):
    """Bad input from the user (model directory, calibration data, options): exit code 2."""


class MissingInputError(InputError, FileNotFoundError):
    """A file or folder the user named does not exist (also a FileNotFoundError): exit code 2."""


class DiskFullError(FeatpruneError, OSError):
    """The output disk ran out of space (ENOSPC): exit code 1, free space and rerun with --resume."""


class KernelError(FeatpruneError, ValueError):
    """A native kernel rejected its arguments (raised by featprune::Error in csrc/)."""
