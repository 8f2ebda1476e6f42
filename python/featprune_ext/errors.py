"""The one error hierarchy of featprune.

The CLI maps these to exit codes (see featprune_ext.cli.main): InputError -> 2,
every other failure -> 1. Library code raises InputError for anything the user can
fix by changing the input (model directory, data, options).
"""

from __future__ import annotations

__all__ = ["DiskFullError", "FeatpruneError", "InputError", "KernelError", "MissingInputError", "NonFiniteError",
           "BlockError"]


class FeatpruneError(Exception):
    """Base class of every error featprune raises on purpose."""


class InputError(FeatpruneError, ValueError):
    """Bad input from the user (model directory, calibration data, options): exit code 2."""


class MissingInputError(InputError, FileNotFoundError):
    """A file or folder the user named does not exist (also a FileNotFoundError): exit code 2."""


class NonFiniteError(InputError):
    """NaN or inf in the input weights, or in the activations the model computes on the calibration
    data: exit code 2. Resuming cannot help, so the engine removes OUT.partial/."""


class DiskFullError(FeatpruneError, OSError):
    """The output disk ran out of space (ENOSPC): exit code 1, free space and rerun with --resume."""


class BlockError(FeatpruneError, RuntimeError):
    """A transformer block failed at run time (out of memory, a device fault): exit code 1. The message
    names the block and what to change; the blocks finished before it are kept for --resume."""


class KernelError(FeatpruneError, ValueError):
    """A native kernel rejected its arguments (raised by featprune::Error in csrc/)."""
