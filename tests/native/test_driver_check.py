"""CUDA runtime/driver versions: build_info() reports them, and the first CUDA call
refuses a driver too old for the runtime the kernels link (statically), with one line
saying what to do. The comparison is a pure function, so all of this runs without a GPU.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

import featprune_ext
from featprune_ext import ops


@pytest.mark.parametrize(("version", "text"), [(13000, "13.0"), (12040, "12.4"), (12080, "12.8"), (11020, "11.2"),
                                               (0, None)])
def test_cuda_version_str(version, text):
    assert ops.cuda_version_str(version) == text


@pytest.mark.parametrize(("runtime", "driver"), [
    (13000, 13000), (13000, 13020), (13000, 14000),
    (12060, 12020),  # same major: minor version compatibility
    (0, 0), (0, 12040),  # no CUDA kernels in this build: nothing to check
])
def test_driver_ok(runtime, driver):
    assert ops.cuda_driver_problem(runtime, driver) is None


@pytest.mark.parametrize(("runtime", "driver", "found"), [
    (13000, 12080, "supports CUDA 12.8"),
    (13020, 12040, "supports CUDA 12.4"),
    (12040, 11080, "supports CUDA 11.8"),
    (13000, 0, "was not found"),
])
def test_driver_too_old_is_one_clear_line(runtime, driver, found):
    msg = ops.cuda_driver_problem(runtime, driver)
    assert msg is not None and "\n" not in msg
    needed = f"CUDA {runtime // 1000}.0 or newer"
    for part in (found, f"built with CUDA {ops.cuda_version_str(runtime)}", needed,
                 "pip install --no-build-isolation .", "--device cpu"):
        assert part in msg, (part, msg)


class _FakeNative:
    """Stands in for _C: a CUDA build whose kernels must never run in these tests."""

    def __init__(self, runtime: int, driver: int):
        self.versions = (runtime, driver)
        self.calls = 0

    def build_info(self):
        return {"cuda": True}

    def cuda_versions(self):
        self.calls += 1
        return self.versions


@pytest.fixture
def fresh_verdict(monkeypatch):
    monkeypatch.setattr(ops, "_driver_verdict", [])


@pytest.mark.no_native_check  # a fake native module, and no kernel call
def test_first_cuda_call_raises_for_old_driver(monkeypatch, fresh_verdict):
    fake = _FakeNative(13000, 12040)
    monkeypatch.setattr(ops, "native", fake)
    for _ in range(2):  # every call raises; the versions are read once
        with pytest.raises(RuntimeError, match=r"driver supports CUDA 12\.4.*built with CUDA 13\.0"):
            ops._use_native(torch.device("cuda", 0))
    assert fake.calls == 1
    assert ops._use_native(torch.device("cpu"))  # the CPU kernels are unaffected


@pytest.mark.no_native_check  # a fake native module, and no kernel call
def test_cuda_call_with_good_driver_proceeds(monkeypatch, fresh_verdict):
    fake = _FakeNative(13000, 13000)
    monkeypatch.setattr(ops, "native", fake)
    assert ops._use_native(torch.device("cuda", 0))
    assert ops._use_native(torch.device("cuda", 0))
    assert fake.calls == 1


@pytest.mark.no_native_check  # a fake native module, and no kernel call
def test_cpu_calls_never_ask_the_driver(monkeypatch, fresh_verdict):
    fake = _FakeNative(13000, 0)
    monkeypatch.setattr(ops, "native", fake)
    assert ops._use_native(torch.device("cpu")) and fake.calls == 0


def test_build_info_reports_versions():
    """(Import hygiene with build_info() called, i.e. asking the driver's version, is
    tests/native/test_build.py::test_import_does_not_initialise_cuda.)"""
    info = featprune_ext.build_info()
    assert "cuda_runtime" in info and "cuda_driver" in info
    if not info.get("native") or not info["cuda"]:
        assert info["cuda_runtime"] is None
        return
    assert re.fullmatch(r"\d+\.\d+", info["cuda_runtime"])
    assert info["cuda_driver"] is None or re.fullmatch(r"\d+\.\d+", info["cuda_driver"])
    if torch.cuda.is_available():
        assert info["cuda_driver"] is not None


def test_runtime_info_under_the_cuda_emulation():
    """csrc/cuda/runtime_info.cu compiled against the emulation: CUDART_VERSION and whatever
    driver version cudaDriverGetVersion reports (0 = no driver) come through unchanged."""
    name = "featprune_cuda_simlib"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "cuda_sim" / "simlib.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    simlib = sys.modules[name]
    if simlib.compiler() is None:
        pytest.skip("no C++ compiler (g++ or $CXX): cannot build the CUDA emulation")
    sim = simlib.load()
    try:
        for driver in (12040, 0, 13000):
            sim.configure(driver_version=driver)
            assert sim.cuda_versions() == (13000, driver)
            assert (ops.cuda_driver_problem(*sim.cuda_versions()) is None) == (driver >= 13000)
    finally:
        sim.configure()
