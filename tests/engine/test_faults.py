"""Faults and what the user sees: one row of the fault table in docs/ARCHITECTURE.md per test.

Every fault is injected for real: two processes on one output, SIGKILL/SIGINT at each phase
of a run (FEATPRUNE_TEST_DIE_AT), NaN/inf written into checkpoint tensors, overflowing fp16
activations, and out-of-memory raised from inside a block (no GPU needed).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from tiny_models import build_tiny_model, edit_tensor

from featprune_ext import cli
from featprune_ext.data.calibration_set import CalibrationSet, read_jsonl_texts
from featprune_ext.engine import PROGRESS_NAME, prune_model
from featprune_ext.engine import block_statistics as stats_pass
from featprune_ext.engine.lock import RunLock, lock_path
from featprune_ext.errors import BlockError, InputError, NonFiniteError
from featprune_ext.methods import Wanda

FAMILY = "llama"  # 3 blocks


def cmd(model_dir, out, calib, *extra):
    return [sys.executable, "-m", "featprune_ext", "prune", str(model_dir), "--out", str(out), "--calib-texts",
            str(calib), "--nsamples", "8", "--seqlen", "24", "--sparsity", "0.5", "--batch-size", "3",
            "--no-progress", *extra]


def _default_sigint():
    # A background job (CI, nohup) inherits SIGINT ignored, and Python then installs no Ctrl-C handler:
    # give the child the default disposition so it behaves as in a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run(args, **env):
    return subprocess.run(args, capture_output=True, text=True, timeout=300, env={**os.environ, **env},
                          preexec_fn=_default_sigint)


def weights(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())
            if p.suffix == ".safetensors" or p.name.endswith(".index.json")}


@pytest.fixture(scope="module")
def reference(tiny_model, calib_jsonl, tmp_path_factory):
    """An uninterrupted run: what every interrupted-then-resumed run must reproduce byte for byte."""
    out = tmp_path_factory.mktemp("ref") / "ref"
    done = run(cmd(tiny_model(FAMILY), out, calib_jsonl))
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture
def model_copy(tiny_model, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(tiny_model(FAMILY), dst)
    return dst


# -- concurrent runs ----------------------------------------------------------------------------
def test_second_run_on_a_locked_output_fails_at_once_naming_the_holder(tiny_model, calib_jsonl, tmp_path):
    out = tmp_path / "o"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom featprune_ext.engine.lock import RunLock\n"
                               f"with RunLock({str(out)!r}):\n    print('locked', flush=True)\n    time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        second = run(cmd(tiny_model(FAMILY), out, calib_jsonl))
        assert second.returncode == 2
        err = second.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("featprune: error: another featprune run is writing")
        assert f"pid {holder.pid} on " in err[0] and "started 20" in err[0]
        assert time.monotonic() - t0 < 60  # "at once": it did not wait for the holder
        assert not out.exists() and not (tmp_path / "o.partial").exists()
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the dead holder's lock: the next run goes through
    assert run(cmd(tiny_model(FAMILY), out, calib_jsonl)).returncode == 0
    assert not lock_path(out).exists()  # removed by the finished run


def test_two_runs_started_at_the_same_instant(tiny_model, calib_jsonl, reference, tmp_path):
    out = tmp_path / "o"
    procs = [subprocess.Popen(cmd(tiny_model(FAMILY), out, calib_jsonl), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "another featprune run is writing" in loser or "already exists" in loser
    assert weights(out) == weights(reference)  # one run's output, whole


def test_lock_is_exclusive_within_one_host(tmp_path):
    with RunLock(tmp_path / "o"):
        with pytest.raises(InputError, match="another featprune run"):
            RunLock(tmp_path / "o").acquire()
    with RunLock(tmp_path / "o"):  # released on exit
        pass


# -- kill -9 and Ctrl-C at every phase ------------------------------------------------------------
@pytest.mark.parametrize("phase", ["read:1", "stats:1", "write:1", "rename:0"])
def test_sigkill_at_each_phase_then_resume_is_bit_identical(tiny_model, calib_jsonl, reference, tmp_path, phase):
    out = tmp_path / "o"
    killed = run(cmd(tiny_model(FAMILY), out, calib_jsonl), FEATPRUNE_TEST_DIE_AT=phase)
    assert killed.returncode == -signal.SIGKILL
    assert not out.exists() and (tmp_path / "o.partial").exists()
    resumed = run(cmd(tiny_model(FAMILY), out, calib_jsonl, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert weights(out) == weights(reference)
    assert not (tmp_path / "o.partial").exists() and not lock_path(out).exists()


def test_ctrl_c_exits_130_and_resumes(tiny_model, calib_jsonl, reference, tmp_path):
    out = tmp_path / "o"
    stopped = run(cmd(tiny_model(FAMILY), out, calib_jsonl), FEATPRUNE_TEST_DIE_AT="stats:1",
                  FEATPRUNE_TEST_SIGNAL="INT")
    assert stopped.returncode == 130 and "featprune: interrupted" in stopped.stderr
    progress = json.loads((tmp_path / "o.partial" / PROGRESS_NAME).read_text())
    assert progress["blocks_done"] == 1
    resumed = run(cmd(tiny_model(FAMILY), out, calib_jsonl, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert weights(out) == weights(reference)


# -- non-finite weights and activations -----------------------------------------------------------
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_weight_is_bad_input_naming_the_tensor(model_copy, calib_jsonl, tmp_path, capsys, value):
    key = "model.layers.2.mlp.down_proj.weight"

    def damage(t):
        t[3, :5] = value
        return t

    edit_tensor(model_copy, key, damage)
    code = cli.main(cmd(model_copy, tmp_path / "o", calib_jsonl)[3:])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert f"checkpoint tensor '{key}' holds 5 non-finite value(s)" in err[0]
    assert "resuming could only fail again" in err[0]
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()  # nothing to --resume


def test_non_finite_embedding_rows_are_found_before_any_block(model_copy, calib_jsonl, tmp_path, capsys):
    edit_tensor(model_copy, "model.embed_tokens.weight", lambda t: t.fill_(float("nan")))
    assert cli.main(cmd(model_copy, tmp_path / "o", calib_jsonl)[3:]) == 2
    assert "'model.embed_tokens.weight' holds" in capsys.readouterr().err
    assert not (tmp_path / "o.partial").exists()


def test_fp16_activation_overflow_names_block_and_linear_and_suggests_float32(tiny_tokenizer_dir, calib_jsonl,
                                                                              tmp_path, capsys):
    model = build_tiny_model(FAMILY, tmp_path / "fp16", tokenizer_dir=tiny_tokenizer_dir, dtype=torch.float16)
    # finite weights whose products overflow fp16 (max 65504) inside block 1's attention
    edit_tensor(model, "model.layers.1.input_layernorm.weight", lambda t: t.fill_(6e4))
    code = cli.main(cmd(model, tmp_path / "o", calib_jsonl)[3:])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "non-finite activations (NaN or inf) reach the input of model.layers." in err
    assert "--dtype float32" in err
    assert not (tmp_path / "o.partial").exists()
    # the suggested fix works, and the output keeps the checkpoint's dtype
    assert cli.main(cmd(model, tmp_path / "o32", calib_jsonl, "--dtype", "float32")[3:]) == 0
    report = json.loads((tmp_path / "o32" / "featprune.json").read_text())
    assert report["model"]["dtype"] == "float16" and report["model"]["compute_dtype"] == "float32"
    from safetensors import safe_open

    for shard in (tmp_path / "o32").glob("*.safetensors"):
        with safe_open(shard, "pt") as f:
            assert all(f.get_slice(k).get_dtype() == "F16" for k in f.keys())


# -- out of memory and device faults inside a block ----------------------------------------------
def _calibration(model_dir, calib_jsonl):
    from transformers import AutoTokenizer

    texts, _ = read_jsonl_texts(calib_jsonl)
    return CalibrationSet.from_texts(texts, AutoTokenizer.from_pretrained(model_dir), 8, 24, 0)


@pytest.mark.parametrize("fault", ["oom", "device"])
def test_fault_in_block_2_names_it_and_keeps_progress(tiny_model, calib_jsonl, reference, tmp_path, monkeypatch,
                                                      fault):
    src = tiny_model(FAMILY)
    real = stats_pass.collect_stats
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # block 2
            if fault == "oom":
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(*args, **kwargs)

    monkeypatch.setattr(stats_pass, "collect_stats", failing)
    out = tmp_path / "o"
    calib = _calibration(src, calib_jsonl)
    with pytest.raises(BlockError) as exc:
        prune_model(src, out, calibration=calib, method=Wanda(), sparsity=0.5, batch_size=3, progress=False)
    msg = str(exc.value)
    assert "block 2 (model.layers.2)" in msg and "--resume" in msg
    if fault == "oom":
        assert msg.startswith("out of memory on cpu at block 2") and "--batch-size (now 3)" in msg
    else:
        assert "illegal memory access" in msg
    progress = json.loads((tmp_path / "o.partial" / PROGRESS_NAME).read_text())
    assert progress["blocks_done"] == 2
    monkeypatch.setattr(stats_pass, "collect_stats", real)
    prune_model(src, out, calibration=calib, method=Wanda(), sparsity=0.5, batch_size=3, progress=False,
                resume=True)
    assert weights(out) == weights(reference)


def test_block_error_exits_1_with_one_line(tiny_model, calib_jsonl, tmp_path, monkeypatch, capsys):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(stats_pass, "collect_stats", oom)
    code = cli.main(cmd(tiny_model(FAMILY), tmp_path / "o", calib_jsonl)[3:])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("featprune: error: out of memory on cpu at block 0")


def test_nonfinite_error_is_input_error():
    assert issubclass(NonFiniteError, InputError)
