"""OWL layer-wise sparsity in the streaming engine, against a plain in-memory OWL
(tests/helpers/naive_sparsegpt.py: naive_owl, wanda_layerwise, naive_sparsegpt with per-layer targets).

Bounds: the targets' parameter-weighted mean equals --sparsity within 1e-9 (float64 arithmetic);
each matrix then prunes exactly floor(in_features * target) per row (Wanda), so the achieved
overall sparsity is below the target by less than 1 / (smallest in_features) (1/32 here)."""

import json
from pathlib import Path

import pytest
import torch
from naive_sparsegpt import assert_matches_naive, naive_owl, naive_sparsegpt, wanda_layerwise
from safetensors.torch import load_file
from tiny_models import TEXTS
from transformers import AutoTokenizer

from featprune_ext import api, cli, reference
from featprune_ext.data.calibration_set import CalibrationSet
from featprune_ext.engine import format_report_table, prune_model
from featprune_ext.errors import InputError
from featprune_ext.methods import OWL, Magnitude, SparseGPT, Wanda


def calibration(model_dir, nsamples=8, seqlen=16):
    tok = AutoTokenizer.from_pretrained(model_dir)
    return CalibrationSet.from_texts(TEXTS, tok, nsamples, seqlen, 0)


def load_dir(path) -> dict:
    sd = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        sd.update(load_file(str(f)))
    return sd


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3"])
def test_wanda_owl_matches_in_memory_owl(tiny_model, tmp_path, family):
    src = tiny_model(family)
    calib = calibration(src)
    report = prune_model(src, tmp_path / "out", calibration=calib, method=Wanda(), sparsity=0.5, batch_size=3,
                         progress=False, layerwise=OWL())
    ratios, targets, params = naive_owl(src, calib, sparsity=0.5, batch_size=3)
    lw = report["layerwise"]
    assert lw["m"] == 5.0 and lw["lambda"] == 0.08
    assert lw["params"] == params
    # same scores up to fp32 rounding of the RMS (running mean vs sum / count): an entry sitting on
    # the threshold could flip, so allow one entry per block
    for got, want, n in zip(lw["outlier_ratio"], ratios, params):
        assert abs(got - want) <= 1 / n
    assert lw["target_sparsity"] == pytest.approx(targets, abs=1e-9)
    mean = sum(t * p for t, p in zip(lw["target_sparsity"], params)) / sum(params)
    assert mean == pytest.approx(0.5, abs=1e-9)
    assert max(lw["target_sparsity"]) - min(lw["target_sparsity"]) == pytest.approx(0.16)

    sd = load_dir(tmp_path / "out")
    masks = wanda_layerwise(src, calib, lw["target_sparsity"], batch_size=3)
    for layer in report["layers"]:
        assert layer["target_sparsity"] == lw["target_sparsity"][layer["index"]]
        for key, info in layer["matrices"].items():
            assert torch.equal(sd[key] == 0, masks[key]), key
            cols = info["shape"][0] if family == "gpt2" else info["shape"][1]  # Conv1D stores [in, out]
            per_row = reference.pruned_per_row(cols, layer["target_sparsity"])
            assert info["sparsity"] == pytest.approx(per_row / cols, abs=1e-12), key
    smallest = min(min(i["shape"]) for layer in report["layers"] for i in layer["matrices"].values())
    assert 0.5 - 1 / smallest < report["overall_sparsity"] <= 0.5 + 1e-12
    table = format_report_table(report)
    assert "target" in table and "OWL (M=5, lambda=0.08)" in table


def test_sparsegpt_owl_matches_in_memory(tiny_model, tmp_path):
    src = tiny_model("llama")
    calib = calibration(src)
    report = prune_model(src, tmp_path / "out", calibration=calib, method=SparseGPT(), sparsity=0.6, batch_size=3,
                         progress=False, layerwise=OWL(m=3.0, lam=0.1))
    targets = report["layerwise"]["target_sparsity"]
    assert targets == pytest.approx(naive_owl(src, calib, sparsity=0.6, m=3.0, lam=0.1, batch_size=3)[1], abs=1e-9)
    masks, weights = naive_sparsegpt(src, calib, targets=targets, batch_size=3)
    assert_matches_naive(tmp_path / "out", masks, weights)  # the tolerances of test_sparsegpt_engine.py


def test_owl_refusals(tiny_model, tmp_path):
    src = tiny_model("llama")
    calib = calibration(src)
    with pytest.raises(InputError, match="N:M"):
        prune_model(src, tmp_path / "a", calibration=calib, method=Wanda(), pattern="2:4", progress=False,
                    layerwise=OWL())
    with pytest.raises(InputError, match="reads none"):
        prune_model(src, tmp_path / "b", calibration=None, method=Magnitude(), sparsity=0.5, progress=False,
                    layerwise=OWL())
    with pytest.raises(InputError, match="--layerwise must be owl"):
        api.prune(src, tmp_path / "c", calib_texts="unused.jsonl", sparsity=0.5, layerwise="gradient")
    assert not (tmp_path / "a").exists() and not (tmp_path / "a.partial").exists()


def test_cli_options(tiny_model, calib_jsonl, tmp_path, capsys):
    src = tiny_model("gpt2")
    out = tmp_path / "out"
    assert cli.main(["prune", str(src), "--out", str(out), "--calib-texts", str(calib_jsonl), "--nsamples", "6",
                     "--seqlen", "16", "--sparsity", "0.5", "--method", "sparsegpt", "--sparsegpt-damp", "0.05",
                     "--sparsegpt-blocksize", "32", "--layerwise", "owl", "--owl-m", "4", "--owl-lambda", "0.05",
                     "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "target" in printed and "OWL (M=4, lambda=0.05)" in printed
    report = json.loads((out / "featprune.json").read_text())
    assert report["method"]["damp"] == 0.05 and report["method"]["blocksize"] == 32
    assert report["layerwise"]["m"] == 4.0 and report["layerwise"]["lambda"] == 0.05
    assert cli.main(["prune", str(src), "--out", str(tmp_path / "nm"), "--calib-texts", str(calib_jsonl),
                     "--pattern", "2:4", "--layerwise", "owl", "--no-progress"]) == 2
    assert "N:M" in capsys.readouterr().err
    assert cli.main(["prune", str(src), "--out", str(tmp_path / "bs"), "--calib-texts", str(calib_jsonl),
                     "--pattern", "2:4", "--method", "sparsegpt", "--sparsegpt-blocksize", "6",
                     "--no-progress"]) == 2
    assert "multiple of M=4" in capsys.readouterr().err
