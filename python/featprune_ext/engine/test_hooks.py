"""Fault injection for the tests, and nothing else: the one place the engine reads test-only
environment variables. They are environment variables because the tests kill real `featprune prune`
processes (tests/engine/test_faults.py, test_engine_resume.py, test_early_shard.py).

    FEATPRUNE_TEST_DIE_AT=phase:i          kill this process at `phase` of block i: skeleton (i = 0),
                                           read, stats, write, rename (i = 0)
    FEATPRUNE_TEST_SIGNAL=INT              ... with that signal instead of SIGKILL (INT: Ctrl-C)
    FEATPRUNE_TEST_DIE_AFTER_BLOCK=i       SIGKILL once block i is on disk
    FEATPRUNE_TEST_RESUME_EVERY=k          resume points at blocks k-1, 2k-1, ... only
"""

from __future__ import annotations

import os
import signal
import time

__all__ = ["die_after_block", "die_if_asked", "resume_every"]

DIE_AT = "FEATPRUNE_TEST_DIE_AT"
SIGNAL = "FEATPRUNE_TEST_SIGNAL"
DIE_AFTER_BLOCK = "FEATPRUNE_TEST_DIE_AFTER_BLOCK"
RESUME_EVERY = "FEATPRUNE_TEST_RESUME_EVERY"


def die_if_asked(phase: str, i: int) -> None:
    """Kill this process at `phase` of block i when FEATPRUNE_TEST_DIE_AT is "phase:i"."""
    if os.environ.get(DIE_AT) == f"{phase}:{i}":
        os.kill(os.getpid(), getattr(signal, "SIG" + os.environ.get(SIGNAL, "KILL")))
        time.sleep(5)  # a catchable signal is handled in the main thread: wait for it here


def die_after_block() -> int | None:
    """The block after whose write the run kills itself (None: never)."""
    value = os.environ.get(DIE_AFTER_BLOCK)
    return None if value is None else int(value)


def resume_every() -> int | None:
    """k: only blocks k-1, 2k-1, ... are resume points (None: the engine decides)."""
    value = os.environ.get(RESUME_EVERY)
    return int(value) if value else None
