"""Data-parallel calibration: 2 gloo ranks (loopback) produce the single-process masks exactly,
each rank runs exactly its round-robin share of the batches, and the statistics are reduced with
SUM (sums of squares, counts) and MAX (absmax, exercised by --protect-absmax)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import build_tiny_model

# runs `featprune ...` recording each rank's batches and all-reduces (tests/helpers/dist_probe.py)
PROBE = str(Path(__file__).resolve().parents[1] / "helpers" / "dist_probe.py")
# Outlier protection by absmax: at 3.5 the columns protected with the all-reduced (MAX) absmax
# differ from those of either rank's own share, so a missing or wrong absmax reduction shows.
ABSMAX = "3.5"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prune_cmd(model, out, calib, nsamples, seqlen, *extra):
    return ["-m", "featprune_ext.cli", "prune", str(model), "--out", str(out), "--calib-texts", str(calib),
            "--nsamples", str(nsamples), "--seqlen", str(seqlen), "--sparsity", "0.5", "--no-progress",
            "--batch-size", "2", *extra]  # fixed: "auto" sizes batches by world size, and batch shapes change fp32 sums


def run_single(*args, env=None):
    # One thread, like each torchrun rank below: torch's CPU matmuls may split their sums differently
    # with 2 threads (seen on an AVX-512 CPU: SmolLM2's masks then differ from the ranks' in a few
    # near-tied entries), and the comparison is about the distribution, not the thread count.
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


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


def probed(cmd: list) -> list:
    assert cmd[:2] == ["-m", "featprune_ext.cli"]
    return [PROBE, *cmd[2:]]


def prune_single_and_two_ranks(model, calib, tmp_path, nsamples, seqlen, *extra):
    """Prune with one process and with 2 gloo ranks; assert both succeed with identical outputs and
    that each rank ran exactly its round-robin share of the batches. Returns (output dir, probes)."""
    single, multi = tmp_path / "single", tmp_path / "multi"
    one = run_single(*probed(prune_cmd(model, single, calib, nsamples, seqlen, *extra)),
                     env={"FEATPRUNE_PROBE_DIR": str(tmp_path / "probe1")})
    assert one.returncode == 0, one.stderr
    two = run_torchrun(2, *probed(prune_cmd(model, multi, calib, nsamples, seqlen, *extra)),
                       env={"FEATPRUNE_PROBE_DIR": str(tmp_path / "probe2")})
    assert two.returncode == 0, two.stderr[-3000:]
    assert_same_output(single, multi)
    everything = json.loads((tmp_path / "probe1" / "rank0.json").read_text())["batches"]
    ranks = [json.loads((tmp_path / "probe2" / f"rank{r}.json").read_text()) for r in range(2)]
    assert len(everything) == json.loads((multi / "featprune.json").read_text())["model"]["blocks"]
    assert len(everything[0]) >= 2
    for block, batches in enumerate(everything):
        for r in range(2):
            assert ranks[r]["batches"][block] == batches[r::2], f"rank {r}, block {block}: not its share"
    return multi, ranks


def test_two_gloo_ranks_match_single_process(tiny_llama, calib_jsonl, tmp_path):
    multi, ranks = prune_single_and_two_ranks(tiny_llama, calib_jsonl, tmp_path, 8, 48, "--protect-absmax", ABSMAX)
    report = json.loads((multi / "featprune.json").read_text())
    assert report["calibration"]["samples"] == 8
    assert not list(multi.glob("activations-*")) and not (tmp_path / "multi.partial").exists()
    protected = {name: info["protected_columns"] for layer in report["layers"]
                 for name, info in layer["matrices"].items()}
    assert any(protected.values()) and max(protected.values()) < 32  # absmax protection is active
    # the reductions themselves: SUM of sums/counts, MAX of absmax, identical on both ranks
    assert len(ranks[0]["reductions"]) == len(ranks[1]["reductions"]) == report["model"]["blocks"]
    threshold, local_differs = float(ABSMAX), False
    for red0, red1 in zip(ranks[0]["reductions"], ranks[1]["reductions"]):
        for (a, after0), (b, after1) in zip(red0["sums"], red1["sums"]):
            assert after0 == after1 == (torch.tensor(a, dtype=torch.float64) + torch.tensor(b, dtype=torch.float64)
                                        ).tolist()
        for (a, after0), (b, after1) in zip(red0["maxima"], red1["maxima"]):
            assert after0 == after1 == torch.maximum(torch.tensor(a), torch.tensor(b)).tolist()
            reduced = torch.tensor(after0) >= threshold
            local_differs |= not torch.equal(torch.tensor(a) >= threshold, reduced)
    assert local_differs, "no protected set depends on the reduction: the test could not see a wrong one"


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
