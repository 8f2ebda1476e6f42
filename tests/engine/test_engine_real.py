"""The engine on the real models (SmolLM2 135M, Gemma 3 270M): equivalence with the naive
in-memory Wanda, memory, tied embeddings, and resume after a real SIGKILL.

Kept lean (few short samples) so the whole suite stays fast on two CPU cores.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from naive import naive_wanda
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from featprune_ext.data.calibration_set import CalibrationSet, read_jsonl_texts
from featprune_ext.engine import PROGRESS_NAME, prune_model
from featprune_ext.methods import Wanda

pytestmark = pytest.mark.slow


def calibration(model_dir, calib_jsonl, nsamples, seqlen):
    texts, buckets = read_jsonl_texts(calib_jsonl)
    return CalibrationSet.from_texts(texts, AutoTokenizer.from_pretrained(model_dir), nsamples, seqlen, 0,
                                     buckets=buckets)


def cli_cmd(model_dir, out, calib_jsonl, nsamples, seqlen, batch_size, *extra):
    return [sys.executable, "-m", "featprune_ext.cli", "prune", str(model_dir), "--out", str(out), "--calib-texts",
            str(calib_jsonl), "--nsamples", str(nsamples), "--seqlen", str(seqlen), "--sparsity", "0.5",
            "--batch-size", str(batch_size), "--no-progress", *extra]


def agreement(out_dir, masks):
    """Fraction of mask entries equal, overall and for block 0 (before differences can compound)."""
    weight_map = json.loads((out_dir / "model.safetensors.index.json").read_text())["weight_map"]
    same = total = same0 = total0 = 0
    for key, mask in masks.items():
        with safe_open(str(out_dir / weight_map[key]), "pt") as f:
            eq = int(((f.get_tensor(key) == 0) == mask).sum())
        same, total = same + eq, total + mask.numel()
        if ".layers.0." in key:
            same0, total0 = same0 + eq, total0 + mask.numel()
    return same / total, same0 / total0


def check_loads(out_dir):
    model = AutoModelForCausalLM.from_pretrained(out_dir).eval()
    tok = AutoTokenizer.from_pretrained(out_dir)
    ids = tok("English: Open the file.\nFrench:", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model(ids, labels=ids)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss)
    return model


# -- SmolLM2 (Llama) ---------------------------------------------------------------------------
SMOL = dict(nsamples=6, seqlen=32, batch_size=2)  # batches of 2 have padding


@pytest.fixture(scope="module")
def smol_pruned(smollm2_dir, calib_jsonl, tmp_path_factory):
    out = tmp_path_factory.mktemp("smol") / "pruned"
    calib = calibration(smollm2_dir, calib_jsonl, SMOL["nsamples"], SMOL["seqlen"])
    prune_model(smollm2_dir, out, calibration=calib, method=Wanda(), sparsity=0.5, batch_size=SMOL["batch_size"],
                progress=False)
    return out, calib


def test_smollm2_matches_naive_and_loads(smollm2_dir, smol_pruned):
    out, calib = smol_pruned
    masks = naive_wanda(smollm2_dir, calib, sparsity=0.5, batch_size=SMOL["batch_size"])
    overall, first = agreement(out, masks)
    assert overall >= 0.995 and first >= 0.9999, (overall, first)
    check_loads(out)


def test_smollm2_real_sigkill_then_resume(smollm2_dir, smol_pruned, calib_jsonl, tmp_path):
    ref, _ = smol_pruned
    out = tmp_path / "out"
    args = cli_cmd(smollm2_dir, out, calib_jsonl, SMOL["nsamples"], SMOL["seqlen"], SMOL["batch_size"])
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    progress = tmp_path / "out.partial" / PROGRESS_NAME
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:  # kill once a few blocks are on disk
            try:
                if json.loads(progress.read_text())["blocks_done"] >= 3:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read()}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not out.exists()
    resumed = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads((out / "featprune.json").read_text())
    assert report["resumed_from_block"] >= 3
    names = sorted(p.name for p in ref.iterdir() if p.suffix == ".safetensors") + ["model.safetensors.index.json"]
    for name in names:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name


# -- Gemma 3 270M ------------------------------------------------------------------------------
def test_gemma3_streamed_memory_equivalence_tied_embeddings(gemma3_dir, calib_jsonl, tmp_path):
    out = tmp_path / "pruned"
    nsamples, seqlen = 6, 48
    done = subprocess.run(cli_cmd(gemma3_dir, out, calib_jsonl, nsamples, seqlen, 1), capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "featprune.json").read_text())
    model_bytes = (gemma3_dir / "model.safetensors").stat().st_size
    assert report["peak_rss_bytes"] < model_bytes, (report["peak_rss_bytes"], model_bytes)
    assert report["model"]["tied_embeddings"] and report["model"]["blocks"] == 18

    # tied embedding matrix copied unchanged, no separate lm_head
    weight_map = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    assert "lm_head.weight" not in weight_map
    with safe_open(str(out / weight_map["model.embed_tokens.weight"]), "pt") as f:
        emb_out = f.get_tensor("model.embed_tokens.weight")
    with safe_open(str(gemma3_dir / "model.safetensors"), "pt") as f:
        assert torch.equal(emb_out, f.get_tensor("model.embed_tokens.weight"))
    del emb_out

    masks = naive_wanda(gemma3_dir, calibration(gemma3_dir, calib_jsonl, nsamples, seqlen), sparsity=0.5)
    overall, first = agreement(out, masks)
    assert overall >= 0.995 and first >= 0.9999, (overall, first)
    del masks
    model = check_loads(out)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
