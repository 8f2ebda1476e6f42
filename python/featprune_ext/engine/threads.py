"""The engine's background threads (the prefetching reader and the writer) at a low CPU priority.

On a CPU run every core already runs the forward passes' OpenMP threads, which wait for each
other at the end of every parallel region: a reader or writer that takes a core for a few
milliseconds stalls both. These threads have a block's compute time of slack, so they are given
the lowest priority (nice 19; Linux sets it per thread) and run in the passes' gaps instead.
FEATPRUNE_IO_NICE sets another niceness (0: as the main thread).
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["IO_NICE_ENV", "background_pool"]

IO_NICE_ENV = "FEATPRUNE_IO_NICE"


def _lower_priority() -> None:
    try:
        nice = int(os.environ.get(IO_NICE_ENV, "19"))
    except ValueError:  # a tuning knob: a bad value keeps the default
        nice = 19
    if nice <= 0 or not sys.platform.startswith("linux"):  # elsewhere setpriority would renice the process
        return
    tid = threading.get_native_id()
    try:
        if nice > os.getpriority(os.PRIO_PROCESS, tid):  # only ever lower the priority
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError:  # e.g. a sandbox without the permission: the thread keeps the default priority
        pass


def background_pool(name: str) -> ThreadPoolExecutor:
    """One worker thread named featprune-NAME, at low priority."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"featprune-{name}", initializer=_lower_priority)
