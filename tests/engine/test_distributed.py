"""Data-parallel calibration: 2 gloo ranks (loopback) produce the single-process masks exactly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tiny_models import build_tiny_model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prune_cmd(model, out, calib, nsamples, seqlen, *extra):
    return ["-m", "featprune_ext.cli", "prune", str(model), "--out", str(out), "--calib-texts", str(calib),
            "--nsamples", str(nsamples), "--seqlen", str(seqlen), "--sparsity", "0.5", "--no-progress", *extra]


def run_single(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=900)


def run_torchrun(nproc: int, *args, env=None):
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
                "--master-addr=127.0.0.1", f"--master-port={free_port()}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(launcher + list(args), capture_output=True, text=True, timeout=900, env=env)


def weights(out_dir):
    tensors = {}
    for shard in sorted(out_dir.glob("*.safetensors")):
        tensors.update(load_file(shard))
    return tensors


def assert_same_output(single, multi):
    a, b = weights(single), weights(multi)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name] == 0, b[name] == 0), f"masks differ in {name}"
        assert torch.equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return build_tiny_model("llama", tmp_path_factory.mktemp("dist") / "model")


def prune_single_and_two_ranks(model, calib, tmp_path, nsamples, seqlen):
    """Prune with one process and with 2 gloo ranks; assert both succeed with identical outputs."""
    single, multi = tmp_path / "single", tmp_path / "multi"
    one = run_single(*prune_cmd(model, single, calib, nsamples, seqlen))
    assert one.returncode == 0, one.stderr
    two = run_torchrun(2, *prune_cmd(model, multi, calib, nsamples, seqlen))
    assert two.returncode == 0, two.stderr[-3000:]
    assert_same_output(single, multi)
    return multi


def test_two_gloo_ranks_match_single_process(tiny_llama, calib_jsonl, tmp_path):
    multi = prune_single_and_two_ranks(tiny_llama, calib_jsonl, tmp_path, 8, 48)
    report = json.loads((multi / "featprune.json").read_text())
    assert report["calibration"]["samples"] == 8
    assert not list(multi.glob("activations-*")) and not (tmp_path / "multi.partial").exists()


def test_rank_killed_mid_run_then_resume_under_torchrun(tiny_llama, calib_jsonl, tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    assert run_single(*prune_cmd(tiny_llama, single, calib_jsonl, 8, 48)).returncode == 0
    dead = run_torchrun(2, *prune_cmd(tiny_llama, multi, calib_jsonl, 8, 48),
                        env={"FEATPRUNE_TEST_DIE_AFTER_BLOCK": "0"})
    assert dead.returncode != 0
    assert not multi.exists() and (tmp_path / "multi.partial").exists()  # clearly incomplete, resumable
    resumed = run_torchrun(2, *prune_cmd(tiny_llama, multi, calib_jsonl, 8, 48, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((multi / "featprune.json").read_text())["resumed_from_block"] == 1
    assert_same_output(single, multi)


def test_distributed_flag_without_torchrun_is_a_clear_error(tiny_llama, calib_jsonl, tmp_path):
    res = run_single(*prune_cmd(tiny_llama, tmp_path / "out", calib_jsonl, 8, 48, "--distributed"))
    assert res.returncode == 2 and "torchrun" in res.stderr


@pytest.mark.slow
def test_real_smollm2_two_ranks_match(smollm2_dir, calib_jsonl, tmp_path):
    prune_single_and_two_ranks(smollm2_dir, calib_jsonl, tmp_path, 4, 32)
