"""`featprune prune`: success, exit codes and one-line errors for every kind of bad input."""

import errno
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from featprune_ext import cli
from featprune_ext.engine import checkpoint, families
from featprune_ext.files import disk_full

FAMILY = "llama"


def prune_args(model_dir, out, calib, *extra):
    return ["prune", str(model_dir), "--out", str(out), "--calib-texts", str(calib), "--nsamples", "6",
            "--seqlen", "16", "--sparsity", "0.5", "--no-progress", *extra]


def run_cli(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def model_copy(tiny_model, tmp_path):
    """A private copy of a tiny model that a test may damage."""
    dst = tmp_path / "model"
    shutil.copytree(tiny_model(FAMILY), dst)
    return dst


def test_prune_ok_prints_table(tiny_model, calib_jsonl, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_cli(prune_args(tiny_model(FAMILY), out, calib_jsonl, "--batch-size", "2"), capsys)
    assert code == 0, err
    assert "sparsity" in stdout and "peak RSS" in stdout and f"wrote {out}" in stdout
    report = json.loads((out / "featprune.json").read_text())
    assert report["calibration"]["samples"] == 6 and report["calibration"]["seqlen"] == 16
    assert report["calibration"]["source"] == str(calib_jsonl)


def test_module_entry_point_and_progress_bar(tiny_model, calib_jsonl, tmp_path):
    out = tmp_path / "out"
    args = prune_args(tiny_model(FAMILY), out, calib_jsonl)
    args.remove("--no-progress")
    proc = subprocess.run([sys.executable, "-m", "featprune_ext.cli", *args], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "pruning" in proc.stderr and "block" in proc.stderr  # tqdm bar on stderr
    assert "total:" in proc.stdout


def _expect_error(argv, capsys, code, *needles):
    got, stdout, err = run_cli(argv, capsys)
    assert got == code, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("featprune: error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    return lines[-1]


def _no_output(out):
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()


def test_missing_safetensors(model_copy, calib_jsonl, tmp_path, capsys):
    (model_copy / "model.safetensors").unlink()
    _expect_error(prune_args(model_copy, tmp_path / "o", calib_jsonl), capsys, 2, "no model.safetensors")
    _no_output(tmp_path / "o")


def test_corrupt_safetensors(model_copy, calib_jsonl, tmp_path, capsys):
    f = model_copy / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    _expect_error(prune_args(model_copy, tmp_path / "o", calib_jsonl), capsys, 2, "truncated")
    _no_output(tmp_path / "o")


def test_shapes_disagree_with_config(model_copy, calib_jsonl, tmp_path, capsys):
    cfg = json.loads((model_copy / "config.json").read_text())
    cfg["intermediate_size"] = 48
    (model_copy / "config.json").write_text(json.dumps(cfg))
    _expect_error(prune_args(model_copy, tmp_path / "o", calib_jsonl), capsys, 2, "shape", "config.json")
    _no_output(tmp_path / "o")


def test_unknown_architecture(model_copy, calib_jsonl, tmp_path, capsys):
    cfg = json.loads((model_copy / "config.json").read_text())
    cfg["model_type"] = "no_such_family"
    cfg["architectures"] = ["NoSuchForCausalLM"]
    (model_copy / "config.json").write_text(json.dumps(cfg))
    _expect_error(prune_args(model_copy, tmp_path / "o", calib_jsonl), capsys, 2, "unknown architecture")
    _no_output(tmp_path / "o")


def test_unknown_layout(tiny_model, calib_jsonl, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(families, "BLOCK_LIST_PATHS", ("decoder.blocks", "trunk.layers"))
    _expect_error(prune_args(tiny_model(FAMILY), tmp_path / "o", calib_jsonl), capsys, 2, "decoder.blocks",
                  "trunk.layers")
    _no_output(tmp_path / "o")


@pytest.mark.parametrize("content", ["", "\n\n", '{"text": ""}\n{"text": "   "}\n'])
def test_empty_calibration_file(tiny_model, tmp_path, capsys, content):
    calib = tmp_path / "empty.jsonl"
    calib.write_text(content)
    _expect_error(prune_args(tiny_model(FAMILY), tmp_path / "o", calib), capsys, 2, "empty")
    _no_output(tmp_path / "o")


def test_bad_calibration_lines(tiny_model, tmp_path, capsys):
    calib = tmp_path / "bad.jsonl"
    calib.write_text('{"text": "ok"}\nnot json\n')
    _expect_error(prune_args(tiny_model(FAMILY), tmp_path / "o", calib), capsys, 2, ":2:")
    _expect_error(prune_args(tiny_model(FAMILY), tmp_path / "o", tmp_path / "missing.jsonl"), capsys, 2,
                  "does not exist")


def test_seqlen_above_model_limit(tiny_model, calib_jsonl, tmp_path, capsys):
    args = prune_args(tiny_model(FAMILY), tmp_path / "o", calib_jsonl)
    args[args.index("--seqlen") + 1] = "4096"
    _expect_error(args, capsys, 2, "4096", "limit of 128")
    _no_output(tmp_path / "o")


@pytest.mark.parametrize("value", ["1.5", "-0.1", "1", "half"])
def test_sparsity_out_of_range(tiny_model, calib_jsonl, tmp_path, capsys, value):
    args = prune_args(tiny_model(FAMILY), tmp_path / "o", calib_jsonl)
    args[args.index("--sparsity") + 1] = value
    with pytest.raises(SystemExit) as exc:  # argparse: usage error
        cli.main(args)
    assert exc.value.code == 2
    assert "--sparsity" in capsys.readouterr().err
    _no_output(tmp_path / "o")


@pytest.mark.parametrize("pattern, needle", [("3:2", "N:M"), ("2-4", "N:M"), ("2:4:8", "N:M")])
def test_bad_pattern(tiny_model, calib_jsonl, tmp_path, capsys, pattern, needle):
    args = prune_args(tiny_model(FAMILY), tmp_path / "o", calib_jsonl)
    i = args.index("--sparsity")
    del args[i:i + 2]
    _expect_error(args + ["--pattern", pattern], capsys, 2, needle)
    _expect_error(args + ["--pattern", "2:4", "--sparsity", "0.3"], capsys, 2, "disagrees")


def test_no_sparsity_and_missing_calibration(tiny_model, calib_jsonl, tmp_path, capsys):
    args = prune_args(tiny_model(FAMILY), tmp_path / "o", calib_jsonl)
    i = args.index("--sparsity")
    _expect_error(args[:i] + args[i + 2:], capsys, 2, "sparsity")
    i = args.index("--calib-texts")
    _expect_error(args[:i] + args[i + 2:], capsys, 2, "--calib-texts")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_without_gpu(tiny_model, calib_jsonl, tmp_path, capsys):
    _expect_error(prune_args(tiny_model(FAMILY), tmp_path / "o", calib_jsonl, "--device", "cuda"), capsys, 2,
                  "CUDA")


def test_existing_output_refused(tiny_model, calib_jsonl, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    _expect_error(prune_args(tiny_model(FAMILY), out, calib_jsonl), capsys, 2, "refusing to overwrite")
    assert out.exists() and not list(out.iterdir())


def _fill_disk_after(monkeypatch, shards_ok: int):
    """Make the (shards_ok+1)-th safetensors shard write fail with ENOSPC."""
    real = checkpoint.write_safetensors
    calls = {"n": 0}

    def write(path, tensors, metadata=None):
        calls["n"] += 1
        if calls["n"] > shards_ok:
            raise disk_full(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        return real(path, tensors, metadata)

    from featprune_ext.engine import run as engine_run

    monkeypatch.setattr(engine_run, "write_safetensors", write)
    monkeypatch.setattr(engine_run, "start_early_shard", lambda *a, **k: None)  # shard 0 is written, and counts


def test_disk_full_at_start(tiny_model, calib_jsonl, tmp_path, capsys, monkeypatch):
    _fill_disk_after(monkeypatch, 0)
    _expect_error(prune_args(tiny_model(FAMILY), tmp_path / "o", calib_jsonl), capsys, 1, "disk full")
    _no_output(tmp_path / "o")


def test_disk_full_midway_then_resume(tiny_model, calib_jsonl, tmp_path, capsys, monkeypatch):
    src = tiny_model(FAMILY)
    ref = tmp_path / "ref"
    assert run_cli(prune_args(src, ref, calib_jsonl), capsys)[0] == 0
    out = tmp_path / "o"
    _fill_disk_after(monkeypatch, 2)  # shard 0 (embeddings etc.) and block 0 fit, block 1 does not
    _expect_error(prune_args(src, out, calib_jsonl), capsys, 1, "disk full", "--resume")
    assert not out.exists()
    progress = json.loads((tmp_path / "o.partial" / "progress.json").read_text())
    assert progress["blocks_done"] == 1
    monkeypatch.undo()
    assert run_cli(prune_args(src, out, calib_jsonl, "--resume"), capsys)[0] == 0
    for f in sorted(ref.glob("*.safetensors")) + [ref / "model.safetensors.index.json"]:
        assert (out / f.name).read_bytes() == f.read_bytes(), f.name
