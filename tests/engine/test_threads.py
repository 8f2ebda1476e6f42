"""The reader and writer threads run at low priority; the main thread (the forward passes) does not."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from featprune_ext.engine.threads import IO_NICE_ENV, background_pool

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")


def nice_in(pool) -> int:
    return pool.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result()


@pytest.mark.parametrize("env,expected", [(None, 19), ("7", 7), ("0", None)], ids=["default", "7", "off"])
def test_background_thread_niceness(monkeypatch, env, expected):
    if env is None:
        monkeypatch.delenv(IO_NICE_ENV, raising=False)
    else:
        monkeypatch.setenv(IO_NICE_ENV, env)
    before = os.getpriority(os.PRIO_PROCESS, 0)
    pool = background_pool("test")
    try:
        got = nice_in(pool)
        assert pool.submit(lambda: threading.current_thread().name).result().startswith("featprune-test")
    finally:
        pool.shutdown()
    assert got == (before if expected is None else max(before, expected))  # niceness is never lowered
    assert os.getpriority(os.PRIO_PROCESS, 0) == before  # the process (main thread) keeps its own
