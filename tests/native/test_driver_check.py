"""CUDA runtime/driver versions and GPU images: build_info() reports the versions, and the
first CUDA call on a device checks that the driver is new enough for the runtime the kernels
link (statically) and that the build carries code that GPU runs. When either fails, the
PyTorch reference kernels run on the GPU after one warning naming the reason. The version
comparison is a pure function and the image check runs under the CUDA emulation, so all of
this runs without a GPU.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import warnings
from pathlib import Path

import pytest
import torch

import featprune_ext
from featprune_ext import ops, reference


@pytest.mark.parametrize(("version", "text"), [(13000, "13.0"), (12040, "12.4"), (12080, "12.8"), (11020, "11.2"),
                                               (0, None)])
def test_cuda_version_str(version, text):
    assert ops.cuda_version_str(version) == text


@pytest.mark.parametrize(("runtime", "driver"), [
    (13000, 13000), (13000, 13020), (13000, 14000),
    (12060, 12020),  # same major: minor version compatibility
    (11080, 11020), (11080, 11040), (11080, 12020),  # CUDA 11.8 kernels: any driver from CUDA 11.2 (r460)
    (0, 0), (0, 12040),  # no CUDA kernels in this build: nothing to check
])
def test_driver_ok(runtime, driver):
    assert ops.cuda_driver_problem(runtime, driver) is None


@pytest.mark.parametrize(("runtime", "driver", "found", "needed"), [
    (13000, 12080, "supports CUDA 12.8", "13.0"),
    (13020, 12040, "supports CUDA 12.4", "13.0"),
    (12040, 11080, "supports CUDA 11.8", "12.0"),
    (11080, 11000, "supports CUDA 11.0", "11.2"),  # cudaMallocAsync needs a CUDA 11.2 driver
    (13000, 0, "was not found", "13.0"),
])
def test_driver_too_old_is_one_clear_line(runtime, driver, found, needed):
    msg = ops.cuda_driver_problem(runtime, driver)
    assert msg is not None and "\n" not in msg
    for part in (found, f"built with CUDA {ops.cuda_version_str(runtime)}", f"CUDA {needed} or newer",
                 "pip install --no-build-isolation ."):
        assert part in msg, (part, msg)


class _FakeNative:
    """Stands in for _C: a CUDA build whose kernels must never run in these tests. `problem`:
    what cuda_kernel_problem answers (the CUDA error of loading the kernels on a device)."""

    def __init__(self, runtime: int, driver: int, *, problem: str = "", archs: str = "75-real,90-virtual",
                 cuda: bool = True):
        self.versions = (runtime, driver)
        self.problem, self.archs, self.cuda = problem, archs, cuda
        self.version_calls = 0
        self.probed: list[int] = []

    def build_info(self):
        return {"cuda": self.cuda, "cuda_archs": self.archs if self.cuda else ""}

    def cuda_versions(self):
        self.version_calls += 1
        return self.versions

    def cuda_kernel_problem(self, device):
        self.probed.append(device)
        return self.problem


@pytest.fixture
def fresh_verdicts(monkeypatch):
    monkeypatch.setattr(ops, "_cuda_verdicts", {})
    monkeypatch.setattr(ops, "_warned_fallback", set())


def _ask(device, times=3):
    """ops._use_native(device) `times` times; returns (answers, the RuntimeWarnings raised)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        answers = [ops._use_native(device) for _ in range(times)]
    return answers, [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


@pytest.mark.no_native_check  # a fake native module, and no kernel call
def test_old_driver_falls_back_with_one_warning(monkeypatch, fresh_verdicts):
    fake = _FakeNative(13000, 12040)
    monkeypatch.setattr(ops, "native", fake)
    answers, warned = _ask(torch.device("cuda", 0))
    assert answers == [False] * 3  # the reference kernels run, on the GPU; nothing raises
    assert len(warned) == 1, warned
    assert re.search(r"driver supports CUDA 12\.4.*built with CUDA 13\.0.*reference kernels on the GPU", warned[0])
    assert fake.version_calls == 1 and fake.probed == []  # an old driver is not asked to load anything
    assert _ask(torch.device("cpu"))[0] == [True] * 3  # the CPU kernels are unaffected


@pytest.mark.no_native_check  # a fake native module, and no kernel call
def test_gpu_without_image_falls_back_with_one_warning(monkeypatch, fresh_verdicts):
    error = "cudaErrorNoKernelImageForDevice: no kernel image is available for execution on the device"
    fake = _FakeNative(11080, 12040, problem=error, archs="80-real,90-real,100-real,90-virtual")
    monkeypatch.setattr(ops, "native", fake)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: "Tesla T4")
    answers, warned = _ask(torch.device("cuda", 0))
    assert answers == [False] * 3 and len(warned) == 1, warned
    for part in ("Tesla T4 (sm_75)", error, "80-real,90-real,100-real,90-virtual", "FEATPRUNE_CUDA_ARCHS=75-real",
                 "reference kernels on the GPU"):
        assert part in warned[0], (part, warned[0])
    assert fake.probed == [0]
    # a second GPU of the same kind is probed once too, and says nothing new
    answers, warned = _ask(torch.device("cuda", 1))
    assert answers == [False] * 3 and warned == [] and fake.probed == [0, 1]


@pytest.mark.no_native_check  # a fake native module, and no kernel call
def test_build_without_cuda_kernels_falls_back_with_one_warning(monkeypatch, fresh_verdicts):
    monkeypatch.setattr(ops, "native", _FakeNative(0, 12040, cuda=False))
    answers, warned = _ask(torch.device("cuda", 0))
    assert answers == [False] * 3 and len(warned) == 1 and "no CUDA kernels" in warned[0]


@pytest.mark.no_native_check  # a fake native module, and no kernel call
def test_cuda_call_with_good_driver_and_image_proceeds(monkeypatch, fresh_verdicts):
    fake = _FakeNative(11080, 12040)
    monkeypatch.setattr(ops, "native", fake)
    answers, warned = _ask(torch.device("cuda", 0))
    assert answers == [True] * 3 and warned == []
    assert fake.version_calls == 1 and fake.probed == [0]


@pytest.mark.no_native_check  # a fake native module, and no kernel call
def test_cpu_calls_never_ask_the_driver(monkeypatch, fresh_verdicts):
    fake = _FakeNative(13000, 0)
    monkeypatch.setattr(ops, "native", fake)
    assert ops._use_native(torch.device("cpu")) and fake.version_calls == 0 and fake.probed == []


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


def _simlib():
    name = "featprune_cuda_simlib"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "cuda_sim" / "simlib.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def sim():
    simlib = _simlib()
    if simlib.compiler() is None:
        pytest.skip("no C++ compiler (g++ or $CXX): cannot build the CUDA emulation")
    kernels = simlib.load()
    kernels.configure()
    kernels.configure_device()
    yield kernels
    kernels.configure()
    kernels.configure_device()


def test_runtime_info_under_the_cuda_emulation(sim):
    """csrc/cuda/runtime_info.cu compiled against the emulation: CUDART_VERSION and whatever
    driver version cudaDriverGetVersion reports (0 = no driver) come through unchanged."""
    for driver in (12040, 0, 13000):
        sim.configure(driver_version=driver)
        assert sim.cuda_versions() == (13000, driver)
        assert (ops.cuda_driver_problem(*sim.cuda_versions()) is None) == (driver >= 13000)


class _SimNative:
    """A native module whose CUDA facts come from csrc/cuda/runtime_info.cu under the emulation."""

    def __init__(self, sim, archs: str):
        self.sim, self.archs = sim, archs

    def build_info(self):
        return {"cuda": True, "cuda_archs": self.archs}

    def cuda_versions(self):
        return self.sim.cuda_versions()

    def cuda_kernel_problem(self, device):
        return self.sim.kernel_problem(device)


# The default architectures of CMakeLists.txt for each toolkit, and the old default (no sm_75).
ARCHS_CUDA_11_8 = "70-real,75-real,80-real,86-real,89-real,90-real,90-virtual"
ARCHS_CUDA_13_0 = "75-real,80-real,86-real,89-real,90-real,100-real,120-real,90-virtual"
ARCHS_OLD_DEFAULT = "80-real,90-real,100-real,90-virtual"


@pytest.mark.no_native_check  # ops is given the emulated build's facts; the kernels run under the emulation
@pytest.mark.parametrize(("gpu", "cc", "archs", "runs"), [
    ("Tesla T4", 75, ARCHS_CUDA_11_8, True),
    ("Tesla T4", 75, ARCHS_OLD_DEFAULT, False),  # the case: no sm_75 code, and PTX 9.0 is too new
    ("Tesla V100", 70, ARCHS_CUDA_11_8, True),
    ("Tesla V100", 70, ARCHS_CUDA_13_0, False),  # CUDA 13 cannot emit sm_70
    ("A10", 86, "80-real", True),  # sm_80 SASS runs on 8.6
    ("A100", 80, "86-real", False),  # but not the other way round
    ("L4", 89, ARCHS_CUDA_11_8, True),
    ("H100", 90, ARCHS_CUDA_11_8, True),
    ("H100", 90, "90a-real", True),
    ("B200", 100, ARCHS_CUDA_11_8, True),  # compute_90 PTX, JIT-compiled by the driver
    ("B200", 100, "90a-real", False),  # arch-specific SASS runs on its own capability only
    ("RTX 5090", 120, ARCHS_CUDA_11_8, True),
    ("RTX 5090", 120, "75-real,80-real,86-real,89-real,90-real", False),  # no PTX to JIT
], ids=["T4-cuda11.8", "T4-old_default", "V100-cuda11.8", "V100-cuda13.0", "A10-sm80_sass", "A100-sm86_sass",
        "L4-cuda11.8", "H100-cuda11.8", "H100-sm90a", "B200-cuda11.8_ptx", "B200-sm90a", "RTX5090-cuda11.8_ptx",
        "RTX5090-no_ptx"])
def test_kernel_image_check_under_the_emulation(sim, monkeypatch, fresh_verdicts, gpu, cc, archs, runs):
    sim.configure_device(cc=cc, images=archs)
    problem = sim.kernel_problem(0)
    assert (problem == "") == runs, problem
    if not runs:
        assert problem.startswith("cudaErrorNoKernelImageForDevice"), problem
    # what the launchers do: a launch with no image fails on the device (the run would stop)
    w = torch.randn(4, 64)
    want = w.clone()
    reference.prune_rows_(want, torch.ones(64), sparsity=0.5)
    if runs:
        sim.prune_rows_(w, torch.ones(64), k=32)
        assert torch.equal(w, want)
    else:
        with pytest.raises(_simlib().SimError, match="cudaErrorNoKernelImageForDevice"):
            sim.prune_rows_(w, torch.ones(64), k=32)
    # so ops asks first: the native kernels, or the reference after one warning naming the GPU
    monkeypatch.setattr(ops, "native", _SimNative(sim, archs))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: (cc // 10, cc % 10))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: gpu)
    answers, warned = _ask(torch.device("cuda", 0))
    assert answers == [runs] * 3
    assert len(warned) == (0 if runs else 1), warned
    if not runs:
        assert f"{gpu} (sm_{cc})" in warned[0] and "cudaErrorNoKernelImageForDevice" in warned[0]


@pytest.mark.no_native_check  # ops is given the emulated build's facts
def test_old_driver_under_the_emulation(sim, monkeypatch, fresh_verdicts):
    """A driver older than the runtime fails every load and launch; ops never gets that far."""
    sim.configure(driver_version=12040)
    assert sim.kernel_problem(0).startswith("cudaErrorInsufficientDriver")
    with pytest.raises(_simlib().SimError, match="cudaErrorInsufficientDriver"):
        sim.prune_rows_(torch.randn(2, 8), torch.ones(8), k=4)
    monkeypatch.setattr(ops, "native", _SimNative(sim, ARCHS_CUDA_13_0))
    answers, warned = _ask(torch.device("cuda", 0))
    assert answers == [False] * 3 and len(warned) == 1
    assert "driver supports CUDA 12.4" in warned[0] and "built with CUDA 13.0" in warned[0]
