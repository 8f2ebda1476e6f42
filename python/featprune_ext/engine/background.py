"""The engine's background threads (the next block's reader, the writer) run at a lower CPU priority.

The forward passes run on the main thread's OpenMP team, one thread per core. A background thread
that takes a core from that team makes each parallel region wait for the team's slowest thread: on a
2-core CPU the background threads' CPU time (about 1.2 s on Gemma 3 270M) came back as about as much
wall time in the passes. Niced, they run when a core would otherwise idle, and still finish before the
main thread needs their results (its waits did not grow): bench/RESULTS.md, "Session 10".

The niceness added to those threads is a benchmark lever, Tuning.background_nice (tuning.py; default
10, at most 19; 0 leaves them at the main thread's priority). Linux only, where setpriority() takes a
thread id; elsewhere nothing changes.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from .tuning import DEFAULT_TUNING

__all__ = ["background_pool"]


def _lower_this_thread(nice: int) -> None:
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:  # e.g. a sandbox that forbids it: the priority is only a speed-up
        pass


def background_pool(name: str, nice: int = DEFAULT_TUNING.background_nice) -> ThreadPoolExecutor:
    """A one-thread pool whose thread runs `nice` steps below the caller's priority."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name,
                              initializer=functools.partial(_lower_this_thread, nice))
