"""The engine's background threads (reader, writer) run niced, so the passes' OpenMP team keeps the cores."""

import os
import sys
import threading

import pytest

from featprune_ext.engine.background import NICE_ENV, background_pool
from featprune_ext.errors import InputError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priorities: Linux only")


def _priority_in(pool):
    return pool.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result()


def _main_priority():
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.parametrize("setting,added", [(None, 10), ("3", 3), ("0", 0)], ids=["default", "3", "off"])
def test_pool_thread_is_niced_and_the_main_thread_is_not(monkeypatch, setting, added):
    if setting is None:
        monkeypatch.delenv(NICE_ENV, raising=False)
    else:
        monkeypatch.setenv(NICE_ENV, setting)
    before = _main_priority()
    pool = background_pool("test-background")
    try:
        assert _priority_in(pool) == min(19, before + added)
    finally:
        pool.shutdown()
    assert _main_priority() == before


@pytest.mark.parametrize("bad", ["-1", "20", "low"])
def test_bad_setting_is_a_clear_error(monkeypatch, bad):
    monkeypatch.setenv(NICE_ENV, bad)
    with pytest.raises(InputError, match=NICE_ENV):
        background_pool("test-background")


def test_bad_setting_stops_a_run_before_any_work(monkeypatch, tmp_path):
    from featprune_ext.engine import prune_model
    from featprune_ext.methods import get_method

    monkeypatch.setenv(NICE_ENV, "high")
    with pytest.raises(InputError, match=NICE_ENV):
        prune_model(tmp_path / "no-model", tmp_path / "out", calibration=None, method=get_method("magnitude"),
                    sparsity=0.5)
    assert not list(tmp_path.iterdir())  # no output, no lock, nothing
