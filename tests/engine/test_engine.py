"""The streaming engine on tiny random models of every family (seconds each)."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from featprune_ext import reference
from featprune_ext.data.calibration_set import CalibrationSet
from featprune_ext.errors import InputError
from featprune_ext.engine import prune_model
from featprune_ext.engine.families import find_blocks, prunable_linears
from featprune_ext.methods import Magnitude, Random, Wanda
from naive import naive_wanda
from tiny_models import FAMILIES, TEXTS


def calibration(model_dir, nsamples=8, seqlen=16):
    tok = AutoTokenizer.from_pretrained(model_dir)
    return CalibrationSet.from_texts(TEXTS, tok, nsamples, seqlen, 0)


def load_dir(path) -> dict:
    sd = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        sd.update(load_file(str(f)))
    return sd


def tree_hash(path) -> str:
    h = hashlib.sha256()
    for f in sorted(Path(path).rglob("*")):
        h.update(str(f.relative_to(path)).encode())
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()


def prunable_names(model_dir) -> dict:
    """checkpoint name -> transposed? for every prunable matrix, from the real model."""
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    path, layers = find_blocks(model)
    return {f"{path}.{i}.{pl.param_name}": pl.transposed for i, layer in enumerate(layers)
            for pl in prunable_linears(layer)}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_prunes_loads_and_matches_naive(tiny_model, tmp_path, family):
    src = tiny_model(family)
    before = tree_hash(src)
    calib = calibration(src)
    out = tmp_path / "out"
    report = prune_model(src, out, calibration=calib, method=Wanda(), sparsity=0.5, batch_size=3, progress=False)
    assert tree_hash(src) == before  # the input directory is never modified
    assert not (tmp_path / "out.partial").exists()

    # output: loads, finite logits, pruned weights in the input dtype, everything else byte-identical
    model = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        logits = model(torch.tensor([[1, 5, 9, 17, 33]])).logits
    assert torch.isfinite(logits).all()
    names = prunable_names(src)
    sd_in, sd_out = load_dir(src), load_dir(out)
    assert set(sd_in) == set(sd_out)
    for key, t in sd_in.items():
        assert sd_out[key].dtype == t.dtype and sd_out[key].shape == t.shape
        if key not in names:
            assert torch.equal(sd_out[key], t), key
    for key, transposed in names.items():
        w = sd_out[key].t() if transposed else sd_out[key]  # rows = output features
        zeros_per_row = (w == 0).sum(dim=1)
        assert (zeros_per_row == w.shape[1] // 2).all(), key
    assert report["overall_sparsity"] == pytest.approx(0.5)
    assert len(report["layers"]) == len(find_blocks(model)[1])
    for f in ("config.json", "tokenizer.json", "model.safetensors.index.json", "featprune.json"):
        assert (out / f).exists(), f
    saved = json.loads((out / "featprune.json").read_text())
    assert saved["method"]["name"] == "wanda" and saved["calibration"]["samples"] == 8
    assert set(saved["versions"]) >= {"torch", "transformers", "featprune"}

    # equivalence with the naive in-memory Wanda (same calibration, padding in every batch)
    masks = naive_wanda(src, calib, sparsity=0.5, batch_size=3)
    assert set(masks) == set(names)
    agree = sum(int(((sd_out[k] == 0) == mk).sum()) for k, mk in masks.items())
    total = sum(mk.numel() for mk in masks.values())
    assert agree / total >= 0.995


def test_conv1d_orientation(tiny_model, tmp_path):
    """GPT-2 stores [in, out]: each output feature (a column on disk) loses half its inputs,
    ranked by |W| * ||x_in||, as in the reference applied to the transposed view."""
    src = tiny_model("gpt2")
    calib = calibration(src)
    prune_model(src, tmp_path / "o", calibration=calib, method=Wanda(), sparsity=0.5, progress=False)
    w_in = load_dir(src)["transformer.h.0.mlp.c_fc.weight"]  # [in=32, out=128]
    w_out = load_dir(tmp_path / "o")["transformer.h.0.mlp.c_fc.weight"]
    assert w_in.shape == (32, 128)
    assert ((w_out == 0).sum(dim=0) == 16).all()  # per output column
    masks = naive_wanda(src, calib, sparsity=0.5)
    assert torch.equal(masks["transformer.h.0.mlp.c_fc.weight"], w_out == 0)


def test_tied_embeddings_are_not_pruned(tiny_model, tmp_path):
    src = tiny_model("gemma3")
    assert json.loads((src / "config.json").read_text()).get("tie_word_embeddings", True)
    report = prune_model(src, tmp_path / "o", calibration=calibration(src), method=Wanda(), sparsity=0.5,
                         progress=False)
    out = load_dir(tmp_path / "o")
    assert "lm_head.weight" not in out
    assert torch.equal(out["model.embed_tokens.weight"], load_dir(src)["model.embed_tokens.weight"])
    assert report["model"]["tied_embeddings"] and "model.embed_tokens.weight" in report["model"]["unpruned_tensors"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "o")
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_sharded_input_gives_same_output(tiny_model, tmp_path):
    a, b = tiny_model("llama"), tiny_model("llama", sharded=True)
    assert (b / "model.safetensors.index.json").exists()
    calib = calibration(a)
    prune_model(a, tmp_path / "a", calibration=calib, method=Wanda(), sparsity=0.5, progress=False)
    prune_model(b, tmp_path / "b", calibration=calib, method=Wanda(), sparsity=0.5, progress=False)
    sa, sb = load_dir(tmp_path / "a"), load_dir(tmp_path / "b")
    assert set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_nm_pattern(tiny_model, tmp_path):
    src = tiny_model("qwen2")
    report = prune_model(src, tmp_path / "o", calibration=calibration(src), method=Wanda(), pattern=(2, 4),
                         progress=False)
    assert report["pattern"] == "2:4" and report["sparsity"] == 0.5
    w = load_dir(tmp_path / "o")["model.layers.1.mlp.down_proj.weight"]
    assert ((w.reshape(w.shape[0], -1, 4) == 0).sum(dim=-1) == 2).all()


def test_magnitude_and_random(tiny_model, tmp_path):
    src = tiny_model("opt")
    prune_model(src, tmp_path / "mag", calibration=None, method=Magnitude(), sparsity=0.25, progress=False)
    w_in = load_dir(src)["model.decoder.layers.2.fc2.weight"]
    w_mag = load_dir(tmp_path / "mag")["model.decoder.layers.2.fc2.weight"]
    assert torch.equal(w_mag == 0, reference.prune_mask(w_in, torch.ones(w_in.shape[1]), sparsity=0.25))
    for run in ("r1", "r2"):
        prune_model(src, tmp_path / run, calibration=None, method=Random(seed=3), sparsity=0.5, progress=False)
    r1, r2 = load_dir(tmp_path / "r1"), load_dir(tmp_path / "r2")
    assert all(torch.equal(r1[k], r2[k]) for k in r1)  # seeded: deterministic
    w = r1["model.decoder.layers.2.fc2.weight"]
    assert ((w == 0).sum(dim=1) == w.shape[1] // 2).all()
    assert not torch.equal(w == 0, w_mag == 0)
    prune_model(src, tmp_path / "r3", calibration=None, method=Random(seed=4), sparsity=0.5, progress=False)
    assert not torch.equal(load_dir(tmp_path / "r3")["model.decoder.layers.2.fc2.weight"] == 0, w == 0)


def test_refuses_to_overwrite(tiny_model, tmp_path):
    src = tiny_model("llama")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="refusing to overwrite"):
        prune_model(src, out, calibration=calibration(src), method=Wanda(), sparsity=0.5, progress=False)
    assert (out / "keep.txt").read_text() == "mine"
    partial = tmp_path / "other.partial"
    partial.mkdir()
    with pytest.raises(InputError, match="--resume"):
        prune_model(src, tmp_path / "other", calibration=calibration(src), method=Wanda(), sparsity=0.5,
                    progress=False)
    with pytest.raises(InputError, match="inside the input"):
        prune_model(src, src / "sub", calibration=calibration(src), method=Wanda(), sparsity=0.5, progress=False)


def test_failed_fresh_run_leaves_no_directory(tiny_model, tmp_path, monkeypatch):
    src = tiny_model("llama")
    from featprune_ext.engine import run as engine_run

    def boom(*a, **k):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(engine_run, "collect_stats", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        prune_model(src, tmp_path / "o", calibration=calibration(src), method=Wanda(), sparsity=0.5, progress=False)
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_tmp_copy_of_model_is_usable(tiny_model, tmp_path):
    """A model directory copied elsewhere (different absolute path) prunes identically."""
    src = tiny_model("gpt_neox")
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    calib = calibration(src)
    prune_model(src, tmp_path / "a", calibration=calib, method=Wanda(), sparsity=0.5, progress=False)
    prune_model(copy, tmp_path / "b", calibration=calib, method=Wanda(), sparsity=0.5, progress=False)
    sa, sb = load_dir(tmp_path / "a"), load_dir(tmp_path / "b")
    assert "embed_out.weight" in sa  # GPT-NeoX's untied head keeps its on-disk name
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
