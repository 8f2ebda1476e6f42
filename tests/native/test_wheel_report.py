""".ci/wheel_report.py, which `make wheel` runs on the repaired wheel: it must fail a wheel PyPI
refuses (no manylinux tag) or one that bundles a second OpenMP runtime, and state what a good
wheel needs."""

from __future__ import annotations

import importlib.util
import json
import zipfile
from pathlib import Path

import pytest

_REPORT = Path(__file__).resolve().parents[2] / ".ci" / "wheel_report.py"


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("featprune_wheel_report", _REPORT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_wheel(tmp_path, platform, *, cuda_runtime="11.8", bundled=()):
    path = tmp_path / f"featprune-0.1.0-cp312-cp312-{platform}.whl"
    archs = "75-real,90-virtual" if cuda_runtime else ""
    facts = {"version": "0.1.0", "cuda_runtime": cuda_runtime, "cuda_archs": archs}
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("featprune_ext/_build_facts.json", json.dumps(facts))
        for name in bundled:
            wheel.writestr(f"featprune.libs/{name}", b"\0")
    return path


@pytest.mark.no_native_check  # reads files only
def test_good_wheel(report, tmp_path):
    lines, problems = report.describe(fake_wheel(tmp_path, "manylinux_2_28_x86_64"))
    text = "\n".join(lines)
    assert problems == []
    for part in ("CPython 3.12", "glibc >= 2.28", "CUDA 11.8 runtime", "CUDA >= 11.2", "460.27.03",
                 "75-real,90-virtual", "no shared libraries", "torch's libgomp.so.1"):
        assert part in text, (part, text)


@pytest.mark.no_native_check  # reads files only
def test_cuda_13_needs_r580(report, tmp_path):
    lines, _ = report.describe(fake_wheel(tmp_path, "manylinux_2_34_x86_64", cuda_runtime="13.0"))
    assert any("CUDA >= 13.0" in line and "580.65.06" in line for line in lines), lines


@pytest.mark.no_native_check  # reads files only
def test_cpu_wheel(report, tmp_path):
    lines, problems = report.describe(fake_wheel(tmp_path, "manylinux_2_34_x86_64", cuda_runtime=""))
    assert problems == [] and any("no CUDA kernels" in line for line in lines)


@pytest.mark.no_native_check  # reads files only
@pytest.mark.parametrize(("platform", "bundled", "problem"), [
    ("linux_x86_64", (), "not manylinux"),
    ("manylinux_2_28_x86_64", ("libgomp-a34b3233.so.1",), "OpenMP runtime"),
])
def test_bad_wheels_fail(report, tmp_path, platform, bundled, problem):
    path = fake_wheel(tmp_path, platform, bundled=bundled)
    _, problems = report.describe(path)
    assert len(problems) == 1 and problem in problems[0], problems
    assert report.main([str(path)]) == 1
