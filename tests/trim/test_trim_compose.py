"""trim and prune compose: trimming then pruning gives the same pruned matrices as pruning then
trimming, when the calibration text is in the kept scripts (its ids, embeddings and so activations are
the same either way)."""

import json

import torch
from safetensors import safe_open
from tiny_tokenizers import LATIN_TEXTS, TEXTS
from transformers import AutoModelForCausalLM, AutoTokenizer

import featprune_ext
from featprune_ext.trim import trim


def tensors(model_dir):
    out = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys()})
    return out


def test_trim_then_prune_equals_prune_then_trim(vocab_model, tmp_path):
    src = vocab_model("byte_fallback", False, "gemma3")
    calib = tmp_path / "calib.jsonl"
    latin = LATIN_TEXTS + [t for t in TEXTS if t.isascii() or "impresora" in t or "Desea" in t]
    calib.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in latin), encoding="utf-8")
    prune_args = dict(method="wanda", sparsity=0.5, calib_texts=calib, nsamples=4, seqlen=16, progress=False)

    trim(src, tmp_path / "trimmed", langs="es,en", progress=False)
    featprune_ext.prune(tmp_path / "trimmed", tmp_path / "trimmed_pruned", **prune_args)
    featprune_ext.prune(src, tmp_path / "pruned", **prune_args)
    report = trim(tmp_path / "pruned", tmp_path / "pruned_trimmed", langs="es,en", progress=False)

    a, b = tensors(tmp_path / "trimmed_pruned"), tensors(tmp_path / "pruned_trimmed")
    pruned = tensors(tmp_path / "pruned")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    blocks = [n for n in a if ".layers." in n and n.endswith("proj.weight")]
    assert blocks and all((a[n] == 0).float().mean() >= 0.5 for n in blocks)  # the zeros survive the trim
    for n in blocks:
        assert torch.equal(a[n], pruned[n])
    # trim keeps the pruning report it was given; the pruned-trimmed model loads and runs
    assert report["input_report"]["method"]["name"] == "wanda"
    tok = AutoTokenizer.from_pretrained(tmp_path / "pruned_trimmed")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned_trimmed", dtype=torch.float32)
    with torch.no_grad():
        logits = model(torch.tensor([tok(LATIN_TEXTS[0])["input_ids"]])).logits
    assert logits.shape[-1] == len(tok) and torch.isfinite(logits).all()
