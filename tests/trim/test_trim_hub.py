"""`featprune trim ORG/NAME`: a hub id resolves through the local Hugging Face cache (hub.py) to the
same snapshot a directory would give, and an id that is neither cached nor reachable names itself."""

import pytest
import torch
from hub_cache import add_to_hub_cache
from huggingface_hub import constants
from safetensors.torch import load_file

from featprune_ext import cli
from featprune_ext.trim import trim


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def tensors(model_dir):
    out = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(path))
    return out


def test_trim_takes_a_hub_id(vocab_model, hub_cache, tmp_path, capsys):
    src = vocab_model("byte_level", True)
    add_to_hub_cache(hub_cache, "tiny-org/tiny-vocab", src)
    trim("tiny-org/tiny-vocab", tmp_path / "hub", langs="es,en", progress=False)
    trim(src, tmp_path / "dir", langs="es,en", progress=False)
    a, b = tensors(tmp_path / "hub"), tensors(tmp_path / "dir")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "hub" / "tokenizer.json").read_bytes() == (tmp_path / "dir" / "tokenizer.json").read_bytes()
    assert cli.main(["trim", "tiny-org/absent", "--out", str(tmp_path / "x"), "--langs", "es,en"]) == 2
    assert "tiny-org/absent" in capsys.readouterr().err
