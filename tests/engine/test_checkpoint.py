"""checkpoint.py: reading model directories and writing safetensors shards."""

import errno
import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from featprune_ext.engine import checkpoint as ck
from featprune_ext.engine.checkpoint import Checkpoint, RawTensor, write_safetensors
from featprune_ext.errors import DiskFullError, InputError


def _model_dir(tmp_path, tensors, name="model.safetensors"):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text("{}")
    save_file(tensors, str(tmp_path / name), metadata={"format": "pt"})
    return tmp_path


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(7, 5, generator=g),
        "b.bias": torch.randn(5, generator=g).to(torch.bfloat16),
        "c.half": torch.randn(3, 4, generator=g).to(torch.float16),
        "d.ids": torch.arange(6, dtype=torch.int64),
        "e.flag": torch.tensor([True, False, True]),
        "f.scalar": torch.tensor(2.5),
    }


def test_read_matches_safetensors(tmp_path):
    tensors = _tensors()
    ckpt = Checkpoint(_model_dir(tmp_path, tensors))
    assert set(ckpt.tensors) == set(tensors)
    for name, t in tensors.items():
        got = ckpt.read(name)
        assert got.dtype == t.dtype and got.shape == t.shape and torch.equal(got, t)
    assert ckpt.total_bytes == sum(t.numel() * t.element_size() for t in tensors.values())
    ckpt.close()


def test_read_rows_reads_only_requested_rows(tmp_path):
    emb = torch.randn(50, 8)
    ckpt = Checkpoint(_model_dir(tmp_path, {"emb": emb}))
    rows = torch.tensor([0, 1, 2, 7, 30, 31, 49])
    assert torch.equal(ckpt.read_rows("emb", rows), emb[rows])
    with pytest.raises(InputError, match="outside"):
        ckpt.read_rows("emb", torch.tensor([50]))


def test_sharded_index(tmp_path):
    t = _tensors()
    (tmp_path / "config.json").write_text("{}")
    save_file({k: t[k] for k in ("a.weight", "b.bias")}, str(tmp_path / "s1.safetensors"))
    save_file({k: t[k] for k in ("c.half", "d.ids", "e.flag", "f.scalar")}, str(tmp_path / "s2.safetensors"))
    wm = {k: "s1.safetensors" for k in ("a.weight", "b.bias")}
    wm.update({k: "s2.safetensors" for k in ("c.half", "d.ids", "e.flag", "f.scalar")})
    (tmp_path / ck.INDEX_NAME).write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    ckpt = Checkpoint(tmp_path)
    assert len(ckpt.files) == 2
    for name, ref in t.items():
        assert torch.equal(ckpt.read(name), ref)


def test_write_roundtrip_memory_and_raw(tmp_path):
    tensors = _tensors()
    src = Checkpoint(_model_dir(tmp_path / "in", tensors))
    out = tmp_path / "out.safetensors"
    new = torch.ones(2, 3, dtype=torch.bfloat16)
    entries = [(k, RawTensor(src, k)) for k in tensors] + [("new", new)]
    nbytes = write_safetensors(out, entries, metadata={"note": "x"})
    assert nbytes == sum(t.numel() * t.element_size() for t in tensors.values()) + new.numel() * 2
    loaded = load_file(str(out))
    for k, t in tensors.items():
        assert loaded[k].dtype == t.dtype and torch.equal(loaded[k], t)
    assert torch.equal(loaded["new"], new)
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["format"] == "pt"  # transformers refuses shards without it
    header_len = int.from_bytes(out.read_bytes()[:8], "little")
    assert (8 + header_len) % 8 == 0
    assert not list(tmp_path.glob("*.tmp"))


def test_write_index(tmp_path):
    ck.write_index(tmp_path, {"b": "x.safetensors", "a": "y.safetensors"}, 123)
    data = json.loads((tmp_path / ck.INDEX_NAME).read_text())
    assert data == {"metadata": {"total_size": 123}, "weight_map": {"a": "y.safetensors", "b": "x.safetensors"}}


@pytest.mark.parametrize("damage, message", [
    ("truncate", "truncated"),
    ("garbage", "corrupt"),
    ("tiny", "not a safetensors file"),
    ("huge_header", "corrupt or truncated"),
])
def test_corrupt_files_are_input_errors(tmp_path, damage, message):
    d = _model_dir(tmp_path, _tensors())
    f = d / "model.safetensors"
    data = f.read_bytes()
    if damage == "truncate":
        f.write_bytes(data[:-10])
    elif damage == "garbage":
        hlen = int.from_bytes(data[:8], "little")
        f.write_bytes(data[:8] + b"{" * hlen + data[8 + hlen:])
    elif damage == "tiny":
        f.write_bytes(b"abc")
    else:
        f.write_bytes((10**12).to_bytes(8, "little") + data[8:])
    with pytest.raises(InputError, match=message):
        Checkpoint(d)


def test_missing_pieces_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        Checkpoint(tmp_path / "nope")
    tmp_path.joinpath("empty").mkdir()
    with pytest.raises(InputError, match="no config.json"):
        Checkpoint(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text("{}")
    (tmp_path / "empty" / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(InputError, match="pytorch_model.bin"):
        Checkpoint(tmp_path / "empty")
    d = _model_dir(tmp_path / "idx", _tensors(), name="s1.safetensors")
    (d / ck.INDEX_NAME).write_text(json.dumps({"weight_map": {"a.weight": "s1.safetensors",
                                                              "z": "missing.safetensors"}}))
    with pytest.raises(InputError, match="missing.safetensors"):
        Checkpoint(d)


def test_disk_full_becomes_diskfullerror_and_leaves_nothing(tmp_path, monkeypatch):
    real_write = os.write

    def full(fd, data):
        if len(data) > 16:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(ck.os, "write", full)
    target = tmp_path / "x.safetensors"
    with pytest.raises(DiskFullError, match="disk full"):
        write_safetensors(target, [("a", torch.zeros(100))])
    assert not target.exists() and not list(tmp_path.iterdir())
