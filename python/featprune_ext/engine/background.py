"""The engine's background threads (the next block's reader, the writer) run at a lower CPU priority.

The forward passes run on the main thread's OpenMP team, one thread per core. A background thread
that takes a core from that team makes each parallel region wait for the team's slowest thread: on a
2-core CPU the background threads' CPU time (about 1.2 s on Gemma 3 270M) came back as about as much
wall time in the passes. Niced, they run when a core would otherwise idle, and still finish before the
main thread needs their results (its waits did not grow): bench/RESULTS.md, "Session 10".

FEATPRUNE_BACKGROUND_NICE=N: the niceness added to those threads (default 10, at most 19; 0 leaves
them at the main thread's priority). Linux only, where setpriority() takes a thread id; elsewhere
nothing changes.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from ..errors import InputError

__all__ = ["NICE_ENV", "background_nice", "background_pool"]

NICE_ENV = "FEATPRUNE_BACKGROUND_NICE"
DEFAULT_NICE = 10


def background_nice() -> int:
    """The niceness to add from FEATPRUNE_BACKGROUND_NICE (InputError when it is not an integer 0..19)."""
    raw = os.environ.get(NICE_ENV, "").strip()
    if not raw:
        return DEFAULT_NICE
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= 19:
        raise InputError(f"{NICE_ENV} must be an integer from 0 to 19, got {raw!r}")
    return value


def _lower_this_thread(nice: int) -> None:
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:  # e.g. a sandbox that forbids it: the priority is only a speed-up
        pass


def background_pool(name: str) -> ThreadPoolExecutor:
    """A one-thread pool whose thread runs at the background priority."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name,
                              initializer=functools.partial(_lower_this_thread, background_nice()))
