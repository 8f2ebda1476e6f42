"""The installed extension: build facts, import hygiene, native vs fallback."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest

import featprune_ext


def test_build_info_fields():
    info = featprune_ext.build_info()
    assert info["native"], f"native module missing: {info.get('error')}"
    assert info["version"] == featprune_ext.__version__
    assert isinstance(info["cuda"], bool) and isinstance(info["openmp"], bool)
    assert isinstance(info["cuda_archs"], str)
    assert info["cpu_prune_path"] in ("avx512", "avx2", "portable")
    if info["cuda"]:  # CMake's syntax, as FEATPRUNE_CUDA_ARCHS or the defaults gave it: "75-real,90-virtual"
        assert all(re.fullmatch(r"\d+[af]?(-real|-virtual)?", arch) for arch in info["cuda_archs"].split(",")), info


def test_one_openmp_runtime_in_the_process():
    """_C needs libgomp.so.1 and the wheel bundles none: the loader must reuse the copy torch loaded."""
    code = ("import featprune_ext, featprune_ext._C; "
            "print(sorted({l.split()[-1] for l in open('/proc/self/maps') if 'libgomp' in l}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = ast.literal_eval(out.stdout)
    if not featprune_ext.build_info()["openmp"]:
        pytest.skip("built without OpenMP")
    assert len(loaded) == 1, f"more than one OpenMP runtime loaded: {loaded}"


def test_import_does_not_initialise_cuda():
    code = ("import torch, featprune_ext; featprune_ext.build_info(); "
            "import featprune_ext.ops, featprune_ext.reference; "
            "print(torch.cuda.is_initialized())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_native_module_does_not_link_libtorch():
    import featprune_ext._C as native

    ldd = subprocess.run(["ldd", native.__file__], capture_output=True, text=True)
    assert "libtorch" not in ldd.stdout and "libc10" not in ldd.stdout


def test_kernels_exported_from_package_and_ops():
    from featprune_ext import ops

    assert featprune_ext.prune_rows_ is ops.prune_rows_
    assert featprune_ext.accumulate_stats is ops.accumulate_stats


@pytest.mark.no_native_check  # the fallback itself is under test
def test_falls_back_to_reference_without_native(monkeypatch):
    import warnings

    import torch

    from featprune_ext import ops

    monkeypatch.setattr(ops, "native", None)
    monkeypatch.setattr(ops, "_warned_fallback", set())
    w = torch.randn(4, 10)
    mask = torch.zeros(4, 10, dtype=torch.bool)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ops.prune_rows_(w, torch.ones(10), sparsity=0.5, mask_out=mask) == 20
    assert any("PyTorch reference" in str(c.message) for c in caught)
    assert torch.all(mask.sum(dim=1) == 5) and torch.all(w[mask] == 0)
