"""The streaming engine on tiny random models of every family (seconds each)."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from naive import naive_wanda
from safetensors.torch import load_file
from tiny_models import DENSE_FAMILIES, TEXTS, build_tiny_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from featprune_ext import reference
from featprune_ext.data.calibration_set import CalibrationSet
from featprune_ext.engine import make_batches, prune_model
from featprune_ext.errors import InputError
from featprune_ext.methods import Magnitude, Random, Wanda


def calibration(model_dir, nsamples=8, seqlen=16):
    tok = AutoTokenizer.from_pretrained(model_dir)
    return CalibrationSet.from_texts(TEXTS, tok, nsamples, seqlen, 0)


# Sample lengths for the equivalence tests: with --batch-size 3 the engine sorts a bucket longest
# first, so the batches are (24, 21, 17), (14, 11, 9), (6, 4, 2): every batch has padding, and
# padding that leaked into the statistics would change them.
MIXED_LENGTHS = [24, 21, 17, 14, 11, 9, 6, 4, 2]
EQUIV_BATCH = 3


def padded_calibration(model_dir) -> CalibrationSet:
    """Real text, cut to MIXED_LENGTHS tokens (one sample per length, shuffled)."""
    ids = AutoTokenizer.from_pretrained(model_dir)(" ".join(TEXTS))["input_ids"]
    order = [4, 0, 7, 2, 8, 1, 5, 3, 6]
    samples = [torch.tensor(ids[3 * i:3 * i + MIXED_LENGTHS[i]], dtype=torch.int64) for i in order]
    calib = CalibrationSet(samples, [0] * len(samples), ["calibration"])
    batches = make_batches(calib, EQUIV_BATCH, 0)
    assert len(batches) == 3 and all(not bool(b.mask.all()) for b in batches), "every batch must pad"
    return calib


# The matrices each family must prune, written out (not derived from the code under test):
# (block list path, blocks, [(module path inside the block, stored as [in, out]?)]).
_ATTN = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]
_GATED_MLP = ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
EXPECTED_MATRICES = {
    "llama": ("model.layers", 3, _ATTN + _GATED_MLP),
    "mistral": ("model.layers", 3, _ATTN + _GATED_MLP),
    "qwen2": ("model.layers", 3, _ATTN + _GATED_MLP),
    "gemma3": ("model.layers", 4, _ATTN + _GATED_MLP),
    "opt": ("model.decoder.layers", 3, ["self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj",
                                        "self_attn.out_proj", "fc1", "fc2"]),
    "xglm": ("model.layers", 3, ["self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj", "self_attn.out_proj",
                                 "fc1", "fc2"]),
    "gpt2": ("transformer.h", 3, ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]),
    "bloom": ("transformer.h", 3, ["self_attention.query_key_value", "self_attention.dense", "mlp.dense_h_to_4h",
                                   "mlp.dense_4h_to_h"]),
    "gpt_neox": ("gpt_neox.layers", 3, ["attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h",
                                        "mlp.dense_4h_to_h"]),
}


def expected_names(family) -> dict:
    """checkpoint name -> stored transposed ([in, out], GPT-2 Conv1D)? for every matrix to prune."""
    path, blocks, modules = EXPECTED_MATRICES[family]
    return {f"{path}.{i}.{m}.weight": family == "gpt2" for i in range(blocks) for m in modules}


def test_expected_matrices_cover_every_family():
    assert set(EXPECTED_MATRICES) == set(DENSE_FAMILIES)


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


def report_matrices(report) -> list:
    return [name for layer in report["layers"] for name in layer["matrices"]]


def assert_masks_equal(out_sd, masks):
    """Exact agreement with the oracle: every mask entry, and kept weights untouched."""
    for key, mask in masks.items():
        got = out_sd[key] == 0
        assert torch.equal(got, mask), f"{key}: {int((got != mask).sum())} of {mask.numel()} mask entries differ"


@pytest.mark.parametrize("family", sorted(DENSE_FAMILIES))
def test_every_family_prunes_loads_and_matches_naive(tiny_model, tmp_path, family):
    src = tiny_model(family)
    before = tree_hash(src)
    calib = padded_calibration(src)
    out = tmp_path / "out"
    report = prune_model(src, out, calibration=calib, method=Wanda(), sparsity=0.5, batch_size=EQUIV_BATCH,
                         progress=False)
    assert tree_hash(src) == before  # the input directory is never modified
    assert not (tmp_path / "out.partial").exists()

    # output: loads, finite logits, pruned weights in the input dtype, everything else byte-identical
    model = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        logits = model(torch.tensor([[1, 5, 9, 17, 33]])).logits
    assert torch.isfinite(logits).all()
    names = expected_names(family)
    sd_in, sd_out = load_dir(src), load_dir(out)
    assert set(report_matrices(report)) == set(names)
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
    assert [layer["index"] for layer in report["layers"]] == list(range(EXPECTED_MATRICES[family][1]))
    for f in ("config.json", "tokenizer.json", "model.safetensors.index.json", "featprune.json"):
        assert (out / f).exists(), f
    saved = json.loads((out / "featprune.json").read_text())
    assert saved["method"]["name"] == "wanda" and saved["calibration"]["samples"] == len(MIXED_LENGTHS)
    assert saved["calibration"]["tokens"] == sum(MIXED_LENGTHS)
    assert set(saved["versions"]) >= {"torch", "transformers", "featprune"}

    # Equivalence with the naive in-memory Wanda (same calibration, padding in every batch).
    # Exact: both run the same fp32 forward passes on the same batches; the statistics differ
    # only in summation order (fp64 totals vs Wanda's fp32 running mean), far below the gaps
    # between neighbouring scores of these random weights. Any real bug (padding counted, a
    # missing square root, unpruned outputs fed forward) changes hundreds of entries.
    masks = naive_wanda(src, calib, sparsity=0.5, batch_size=EQUIV_BATCH)
    assert set(masks) == set(names)
    assert_masks_equal(sd_out, masks)
    for key, mask in masks.items():  # kept weights bit-identical to the input, pruned ones exactly 0
        assert torch.equal(sd_out[key], sd_in[key].masked_fill(mask, 0)), key



def test_conv1d_orientation(tiny_model, tmp_path):
    """GPT-2 stores [in, out]: each output feature (a column on disk) loses half its inputs,
    ranked by |W| * ||x_in||, as in the reference applied to the transposed view."""
    src = tiny_model("gpt2")
    calib = padded_calibration(src)
    prune_model(src, tmp_path / "o", calibration=calib, method=Wanda(), sparsity=0.5, batch_size=EQUIV_BATCH,
                progress=False)
    w_in = load_dir(src)["transformer.h.0.mlp.c_fc.weight"]  # [in=32, out=128]
    w_out = load_dir(tmp_path / "o")["transformer.h.0.mlp.c_fc.weight"]
    assert w_in.shape == (32, 128)
    assert ((w_out == 0).sum(dim=0) == 16).all()  # per output column
    masks = naive_wanda(src, calib, sparsity=0.5, batch_size=EQUIV_BATCH)
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


@pytest.mark.parametrize("family,pattern", [("qwen2", (2, 4)), ("gpt2", (4, 8))])
def test_nm_pattern(tiny_model, tmp_path, family, pattern):
    src = tiny_model(family)
    calib = padded_calibration(src)
    report = prune_model(src, tmp_path / "o", calibration=calib, method=Wanda(), pattern=pattern,
                         batch_size=EQUIV_BATCH, progress=False)
    n, m = pattern
    assert report["pattern"] == f"{n}:{m}" and report["sparsity"] == 1 - n / m
    out = load_dir(tmp_path / "o")
    names = expected_names(family)
    for key, transposed in names.items():
        w = out[key].t() if transposed else out[key]
        assert ((w.reshape(w.shape[0], -1, m) == 0).sum(dim=-1) == m - n).all(), key
    # which entries: exactly the naive oracle's N:M masks
    masks = naive_wanda(src, calib, pattern=pattern, batch_size=EQUIV_BATCH)
    assert set(masks) == set(names)
    assert_masks_equal(out, masks)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_half_precision_checkpoint_round_trips_in_its_dtype(tiny_tokenizer_dir, tmp_path, family, dtype):
    """A bf16/fp16 checkpoint: forward passes in that dtype (as the naive model runs them), every
    tensor written back in it, kept weights bit for bit, masks exactly the oracle's."""
    src = build_tiny_model(family, tmp_path / "model", tokenizer_dir=tiny_tokenizer_dir, dtype=dtype)
    calib = padded_calibration(src)
    out = tmp_path / "out"
    report = prune_model(src, out, calibration=calib, method=Wanda(), sparsity=0.5, batch_size=EQUIV_BATCH,
                         progress=False)
    name = str(dtype).replace("torch.", "")
    assert report["model"]["dtype"] == name and report["model"]["compute_dtype"] == name
    sd_in, sd_out = load_dir(src), load_dir(out)
    assert set(sd_in) == set(sd_out)
    names = expected_names(family)
    for key, t in sd_in.items():
        assert sd_out[key].dtype == dtype == t.dtype, key
        if key not in names:
            assert torch.equal(sd_out[key].view(torch.int16), t.view(torch.int16)), key
    masks = naive_wanda(src, calib, sparsity=0.5, batch_size=EQUIV_BATCH)
    assert set(masks) == set(names)
    assert_masks_equal(sd_out, masks)
    for key, mask in masks.items():
        assert torch.equal(sd_out[key].view(torch.int16), sd_in[key].masked_fill(mask, 0).view(torch.int16)), key
    model = AutoModelForCausalLM.from_pretrained(out, dtype="auto")
    assert model.dtype == dtype


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
    from featprune_ext.engine import block_statistics as stats_pass

    def boom(*a, **k):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(stats_pass, "collect_stats", boom)
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
