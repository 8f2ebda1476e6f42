"""checkpoint.RowGather: some rows of an input tensor written in chunks, equal to indexing the tensor."""

import torch
from safetensors.torch import load_file, save_file

import featprune_ext
from featprune_ext.engine.checkpoint import Checkpoint, RawTensor, RowGather, write_safetensors


def test_row_gather_in_chunks_equals_indexing(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text("{}")
    emb = torch.randn(50, 7)
    bias = torch.randn(50)
    other = torch.arange(12, dtype=torch.int32).reshape(3, 4)
    save_file({"emb": emb, "bias": bias, "other": other}, src / "model.safetensors")
    ckpt = Checkpoint(src)
    rows = torch.tensor([0, 1, 2, 5, 9, 10, 11, 30, 49])
    n = write_safetensors(tmp_path / "out.safetensors", [("emb", RowGather(ckpt, "emb", rows, chunk_rows=2)),
                                                         ("bias", RowGather(ckpt, "bias", rows)),
                                                         ("other", RawTensor(ckpt, "other"))])
    out = load_file(tmp_path / "out.safetensors")
    assert torch.equal(out["emb"], emb[rows]) and torch.equal(out["bias"], bias[rows])
    assert torch.equal(out["other"], other)
    assert n == rows.numel() * 8 * 4 + other.numel() * 4


def test_the_package_exposes_trim():
    from featprune_ext.trim import trim

    assert featprune_ext.trim.trim is trim and "trim" in featprune_ext.__all__
