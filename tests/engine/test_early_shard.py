"""early_shard.py: the unpruned tensors' shard copied during the skeleton's imports must be the
very file the usual write gives, or not be used at all, and must leave nothing behind."""

import errno
import os
import subprocess
import sys

import pytest
from tiny_models import FAMILIES

from featprune_ext import cli
from featprune_ext.engine import ModelSkeleton, early_shard
from featprune_ext.engine import checkpoint as checkpoint_mod
from featprune_ext.engine.checkpoint import Checkpoint, RawTensor, write_safetensors
from featprune_ext.engine.early_shard import guess_unpruned_keys, start_early_shard


def _usual_shard(ckpt, keys, path):
    write_safetensors(path, [(k, RawTensor(ckpt, k)) for k in keys])
    return path.read_bytes()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_guess_and_copy_match_the_skeleton_on_every_family(tiny_model, tmp_path, family):
    ckpt = Checkpoint(tiny_model(family))
    early = start_early_shard(ckpt, tmp_path / "o.partial")
    assert early is not None  # /tmp here has unnamed files (O_TMPFILE)
    skel = ModelSkeleton(ckpt)
    assert early.keys == skel.other_keys  # the name rule finds exactly what no block owns
    assert early.link(skel.other_keys, tmp_path / "early.safetensors")
    assert (tmp_path / "early.safetensors").read_bytes() == _usual_shard(ckpt, skel.other_keys,
                                                                          tmp_path / "usual.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["early.safetensors", "usual.safetensors"]
    ckpt.close()


def test_a_wrong_guess_is_dropped_and_leaves_nothing(tiny_model, tmp_path):
    ckpt = Checkpoint(tiny_model("llama"))
    early = start_early_shard(ckpt, tmp_path / "o.partial")
    keys = [*early.keys, "model.layers.0.input_layernorm.weight"]
    assert not early.link(keys, tmp_path / "shard.safetensors")
    assert list(tmp_path.iterdir()) == [] and early.fd == -1
    early.close()  # idempotent


def test_a_failed_copy_is_not_used(tiny_model, tmp_path, monkeypatch):
    def disk_full(src, fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_mod, "_copy_raw", disk_full)
    ckpt = Checkpoint(tiny_model("llama"))
    early = start_early_shard(ckpt, tmp_path / "o.partial")
    assert not early.link(early.keys, tmp_path / "shard.safetensors")
    assert isinstance(early.error, OSError) and list(tmp_path.iterdir()) == []


def test_no_unnamed_files_or_switched_off_means_no_early_copy(tiny_model, tmp_path, monkeypatch):
    ckpt = Checkpoint(tiny_model("llama"))
    real_open = os.open

    def no_tmpfile(path, flags, *args):
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        return real_open(path, flags, *args)

    monkeypatch.setattr(early_shard.os, "open", no_tmpfile)
    assert start_early_shard(ckpt, tmp_path / "o.partial") is None
    monkeypatch.setattr(early_shard.os, "open", real_open)


def test_guess_skips_numbered_components():
    class Fake:
        tensors = {"model.embed_tokens.weight": 0, "model.layers.0.mlp.up_proj.weight": 0, "lm_head.weight": 0,
                   "transformer.h.11.attn.c_attn.bias": 0, "0.weight": 0, "model.norm2.weight": 0}

    assert guess_unpruned_keys(Fake()) == ["lm_head.weight", "model.embed_tokens.weight", "model.norm2.weight"]


def test_engine_output_is_the_same_with_and_without_the_early_copy(tiny_model, calib_jsonl, tmp_path, monkeypatch):
    used = []
    real_link = early_shard.EarlyShard.link

    def spy(self, keys, path):
        used.append(real_link(self, keys, path))
        return used[-1]

    monkeypatch.setattr(early_shard.EarlyShard, "link", spy)
    src = tiny_model("gemma3")
    args = ["prune", str(src), "--calib-texts", str(calib_jsonl), "--nsamples", "4", "--seqlen", "24",
            "--sparsity", "0.5", "--no-progress", "-q"]
    assert cli.main([*args, "--out", str(tmp_path / "early")]) == 0
    assert used == [True]
    from featprune_ext.cli import prune as prune_cli
    from featprune_ext.engine.tuning import Tuning

    assert prune_cli.run(cli.build_parser().parse_args([*args, "--out", str(tmp_path / "usual")]),
                         tuning=Tuning(early_shard=False)) == 0
    assert used == [True]  # not called again: switched off
    files = sorted(p.name for p in (tmp_path / "usual").iterdir() if p.suffix == ".safetensors")
    assert files == sorted(p.name for p in (tmp_path / "early").iterdir() if p.suffix == ".safetensors")
    for name in files:
        assert (tmp_path / "early" / name).read_bytes() == (tmp_path / "usual" / name).read_bytes(), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["early", "usual"]  # no stray files beside the outputs


def test_kill_before_the_copy_is_linked_leaves_nothing(tiny_model, calib_jsonl, tmp_path):
    out = tmp_path / "o"
    args = [sys.executable, "-m", "featprune_ext.cli", "prune", str(tiny_model("llama")), "--out", str(out),
            "--calib-texts", str(calib_jsonl), "--nsamples", "4", "--seqlen", "24", "--sparsity", "0.5",
            "--no-progress", "-q"]
    killed = subprocess.run(args, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "FEATPRUNE_TEST_DIE_AT": "skeleton:0"})
    assert killed.returncode == -9, killed.stderr
    # the copy was made (an unnamed file) and died with the process; kill -9 leaves only the lock file
    assert [p.name for p in tmp_path.iterdir()] in ([], ["o.lock"])


def test_resumed_or_distributed_runs_copy_nothing_early(tiny_model, tmp_path):
    class Dist:
        enabled = True

    ckpt = Checkpoint(tiny_model("llama"))
    assert start_early_shard(ckpt, tmp_path / "o.partial", Dist()) is None
    (tmp_path / "o.partial").mkdir()  # a run to resume: its shard 0 is written (or not) already
    assert start_early_shard(ckpt, tmp_path / "o.partial") is None
