"""The engine's background threads (reader, writer) run niced, so the passes' OpenMP team keeps the cores."""

import os
import sys
import threading

import pytest

from featprune_ext.engine.background import background_pool
from featprune_ext.engine.tuning import Tuning
from featprune_ext.errors import InputError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priorities: Linux only")


def _priority_in(pool):
    return pool.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result()


def _main_priority():
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.parametrize("setting,added", [(None, 10), (3, 3), (0, 0)], ids=["default", "3", "off"])
def test_pool_thread_is_niced_and_the_main_thread_is_not(setting, added):
    before = _main_priority()
    pool = background_pool("test-background") if setting is None else background_pool("test-background", setting)
    try:
        assert _priority_in(pool) == min(19, before + added)
    finally:
        pool.shutdown()
    assert _main_priority() == before


@pytest.mark.parametrize("bad", [-1, 20, "low", True])
def test_bad_setting_is_a_clear_error(bad):
    with pytest.raises(InputError, match="background_nice"):
        Tuning(background_nice=bad)
