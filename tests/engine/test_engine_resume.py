"""Resume after SIGKILL: the output must be bit-identical to an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys

from featprune_ext import cli
from featprune_ext.engine import PROGRESS_NAME

FAMILY = "gemma3"  # 4 blocks, sliding and global layers: the resumed blocks need per-layer arguments


def cmd(model_dir, out, calib, *extra):
    return [sys.executable, "-m", "featprune_ext.cli", "prune", str(model_dir), "--out", str(out),
            "--calib-texts", str(calib), "--nsamples", "8", "--seqlen", "24", "--sparsity", "0.5",
            "--batch-size", "3", "--no-progress", *extra]


def run(args, **env):
    return subprocess.run(args, capture_output=True, text=True, timeout=300, env={**os.environ, **env})


def weight_files(path):
    return sorted(p for p in path.iterdir() if p.suffix == ".safetensors" or p.name.endswith(".index.json"))


def test_kill_then_resume_is_bit_identical(tiny_model, calib_jsonl, tmp_path, capsys):
    src = tiny_model(FAMILY)
    ref, out = tmp_path / "ref", tmp_path / "out"
    partial = tmp_path / "out.partial"
    assert run(cmd(src, ref, calib_jsonl)).returncode == 0

    killed = run(cmd(src, out, calib_jsonl), FEATPRUNE_TEST_DIE_AFTER_BLOCK="1")
    assert killed.returncode == -signal.SIGKILL
    assert not out.exists()  # nothing that looks complete
    progress = json.loads((partial / PROGRESS_NAME).read_text())
    assert progress["blocks_done"] == 2 and progress["shard0_done"]
    assert (partial / progress["activations"]).exists()  # inputs of block 2, saved atomically
    assert not (partial / "featprune.json").exists()

    assert cli.main(cmd(src, out, calib_jsonl)[3:]) == 2  # without --resume: refused, partial left alone
    assert "--resume" in capsys.readouterr().err
    assert partial.exists()
    assert cli.main(cmd(src, out, calib_jsonl, "--resume", "--seed", "1")[3:]) == 2  # other calibration subset
    assert "different" in capsys.readouterr().err

    resumed = run(cmd(src, out, calib_jsonl, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert not partial.exists()
    assert [p.name for p in weight_files(out)] == [p.name for p in weight_files(ref)]
    for f in weight_files(ref):
        assert (out / f.name).read_bytes() == f.read_bytes(), f.name
    report, ref_report = (json.loads((d / "featprune.json").read_text()) for d in (out, ref))
    assert report["resumed_from_block"] == 2 and ref_report["resumed_from_block"] is None
    assert [r["index"] for r in report["layers"]] == [0, 1, 2, 3]
    strip = ("time_s", "peak_rss_bytes")
    assert ([{k: v for k, v in r.items() if k not in strip} for r in report["layers"]]
            == [{k: v for k, v in r.items() if k not in strip} for r in ref_report["layers"]])
    assert not list(out.glob("activations-*")) and not (out / PROGRESS_NAME).exists()


def test_resume_without_partial_starts_fresh(tiny_model, calib_jsonl, tmp_path):
    src = tiny_model("llama")
    done = run(cmd(src, tmp_path / "o", calib_jsonl, "--resume"))
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "o" / "featprune.json").read_text())["resumed_from_block"] is None


def test_resume_points_can_be_sparse(tiny_model, calib_jsonl, tmp_path):
    """Blocks whose outputs are not saved (large activations: resume.resume_point_due) are redone by
    --resume from the last saved block, and the output is still bit-identical."""
    src = tiny_model(FAMILY)
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert run(cmd(src, ref, calib_jsonl)).returncode == 0
    killed = run(cmd(src, out, calib_jsonl), FEATPRUNE_TEST_DIE_AFTER_BLOCK="2", FEATPRUNE_TEST_RESUME_EVERY="2")
    assert killed.returncode == -signal.SIGKILL
    partial = tmp_path / "out.partial"
    progress = json.loads((partial / PROGRESS_NAME).read_text())
    assert progress["blocks_done"] == 2 and len(progress["layers"]) == 2  # block 2 is on disk, not a resume point
    assert (partial / progress["activations"]).exists()
    resumed = run(cmd(src, out, calib_jsonl, "--resume"), FEATPRUNE_TEST_RESUME_EVERY="2")
    assert resumed.returncode == 0, resumed.stderr
    for f in weight_files(ref):
        assert (out / f.name).read_bytes() == f.read_bytes(), f.name
    report = json.loads((out / "featprune.json").read_text())
    assert report["resumed_from_block"] == 2 and [r["index"] for r in report["layers"]] == [0, 1, 2, 3]
