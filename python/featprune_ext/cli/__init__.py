"""The `featprune` command line: one parser, one error -> exit-code map, one error format.

Exit codes:
  0   success
  1   runtime failure (including a full disk: free space and rerun with --resume)
  2   usage error or bad input (missing/corrupt model files, unknown architecture, empty
      calibration file, out-of-range options, an existing output directory)
  130 interrupted (Ctrl-C)

Errors are printed as one line, `featprune: error: ...`; -v shows the traceback. -q and -v
are accepted before or after the subcommand.

Adding a subcommand: a module in this package with `add_parser(subparsers, parents)` that calls
`subparsers.add_parser(name, parents=parents, ...)`, adds its options and
`set_defaults(func=run)`, where `run(args) -> int` returns the exit code and raises
featprune_ext.errors.InputError for bad input. Then list it in COMMANDS.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import os
import sys
import threading
import traceback
from typing import NoReturn

from ..errors import DiskFullError, FeatpruneError, InputError

__all__ = ["COMMANDS", "EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_parser", "console_main",
           "main", "run_parsed"]

# subcommand modules, in the order `featprune --help` lists them
COMMANDS = ["prune", "trim", "data", "eval", "analyze", "demo"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

MAIN_EPILOG = """exit codes: 0 success, 1 runtime failure (disk full included: rerun with --resume),
2 bad input or usage, 130 interrupted. `featprune COMMAND --help` shows each command's options and examples.
Quick start: featprune demo"""


def _global_flags(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="show tracebacks on errors")
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="no progress bars or tables; errors only")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="featprune", description="Low-memory pruning of multilingual LLMs, calibrated on translation "
                                      "demonstrations (Kim et al., 2024).",
        epilog=MAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _global_flags(parser, False)
    # the same flags after the subcommand; SUPPRESS keeps a flag given before it
    after = argparse.ArgumentParser(add_help=False)
    _global_flags(after, argparse.SUPPRESS)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(subparsers, [after])
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # --help exits 0, a usage error exits 2 (argparse's SystemExit)
    return run_parsed(args)


def run_parsed(args) -> int:
    """Run a parsed command line (args.func(args)) under the one error -> exit-code map."""
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("featprune: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except InputError as exc:
        code, msg, error = EXIT_USAGE, str(exc), exc
    except DiskFullError as exc:
        code, msg, error = EXIT_FAILURE, exc.strerror or str(exc), exc
    except FeatpruneError as exc:  # a runtime failure featprune already explained (e.g. BlockError)
        code, msg, error = EXIT_FAILURE, str(exc), exc
    except Exception as exc:  # a runtime failure: one line unless -v
        code, msg, error = EXIT_FAILURE, f"{type(exc).__name__}: {exc}", exc
    if args.verbose:  # outside the except block print_exc() has nothing to print: pass the exception
        traceback.print_exception(type(error), error, error.__traceback__)
    print(f"featprune: error: {msg}", file=sys.stderr)
    return code


def console_main(fast_exit: bool = True) -> NoReturn:
    """The `featprune` command and `python -m featprune_ext`: main(), then exit without the
    interpreter's teardown.

    Tearing down torch's and transformers' thousands of modules takes 1-2.5 s on a 2-core CPU, a
    twentieth of a small pruning run, and does nothing useful: every file featprune writes is
    already fsynced and renamed. atexit handlers still run and both streams are flushed. Where a
    non-daemon thread is still alive, the normal exit waits for it instead; fast_exit=False asks for
    the normal exit (a benchmark lever: bench/tuned_prune.py)."""
    code = main()
    main_thread = threading.main_thread()
    if not fast_exit or any(t is not main_thread and not t.daemon for t in threading.enumerate()):
        sys.exit(code)
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe or stream: nothing left to save
                pass
        os._exit(code)
