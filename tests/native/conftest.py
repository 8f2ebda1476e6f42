"""Every kernel test here compares the native kernels with reference.py. If `_C` (or its CUDA
part) were missing, ops would warn once and then run the reference, and every later test would
compare the reference with itself and pass. The autouse fixture below makes that impossible:
each ops call in a test must go to the native module (checked by a spy on the calls that reach
featprune_ext._C), and a fallback fails the test on the spot. Tests that exercise the fallback
or fake the native module on purpose carry `@pytest.mark.no_native_check`.
"""

from __future__ import annotations

import pytest

KERNELS = ("accumulate_stats", "prune_rows")


def pytest_configure(config):
    config.addinivalue_line("markers", "no_native_check: the test replaces or bypasses the native module on purpose")


class NativeSpy:
    """Stands in for featprune_ext._C in ops: forwards everything, records kernel calls."""

    def __init__(self, real):
        self._real = real
        self.calls: list[tuple[str, int]] = []  # (kernel, device code: 0 cpu, 1 cuda)

    def __getattr__(self, name):
        attr = getattr(self._real, name)
        if name not in KERNELS:
            return attr

        def call(*args, **kwargs):
            self.calls.append((name, kwargs.get("device")))
            return attr(*args, **kwargs)

        return call


@pytest.fixture(autouse=True)
def native_kernels_run(request, monkeypatch):
    if request.node.get_closest_marker("no_native_check"):
        yield None
        return
    from featprune_ext import _native, ops

    assert ops.native is not None, f"featprune_ext._C did not import ({_native.import_error}): the kernel tests " \
                                   "would only compare reference.py with itself"
    assert not ops._warned_fallback, f"ops already fell back to the reference: {sorted(ops._warned_fallback)}"
    spy = NativeSpy(ops.native)
    monkeypatch.setattr(ops, "native", spy)
    real_use_native = ops._use_native
    dispatched: list[str] = []

    def use_native(device):
        ok = real_use_native(device)
        assert ok, (f"ops would run reference.py for a {device.type} tensor (native module or its "
                    f"{'CUDA kernels' if device.type == 'cuda' else 'CPU kernels'} missing)")
        dispatched.append(device.type)
        return ok

    monkeypatch.setattr(ops, "_use_native", use_native)
    yield spy
    # every dispatch decided for the native module reached it, on the right device
    codes = {"cpu": 0, "cuda": 1}
    assert [device for _, device in spy.calls] == [codes[d] for d in dispatched], (spy.calls, dispatched)
