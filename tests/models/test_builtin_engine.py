"""The engine on featprune's built-in model code: the same pruned checkpoint, byte for byte, as on
transformers' classes, and a pruning run that never imports transformers in its own process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from featprune_ext.engine.checkpoint import Checkpoint


def _prune(model_dir, out, calib_jsonl, monkeypatch, code: str, **kw) -> dict:
    from featprune_ext import api

    return api.prune(model_dir, out, sparsity=0.5, calib_texts=calib_jsonl, nsamples=8, seqlen=16, progress=False,
                     batch_size=3, model_code=code, **kw)


def _tensors(out) -> dict:
    ckpt = Checkpoint(out)
    try:
        return {k: ckpt.read(k).clone() for k in ckpt.tensors}
    finally:
        ckpt.close()


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "gemma3"])
def test_pruned_checkpoint_identical_to_transformers_code(family, tiny_model, calib_jsonl, tmp_path, monkeypatch):
    d = tiny_model(family)
    ours = _prune(d, tmp_path / "builtin", calib_jsonl, monkeypatch, "auto")
    theirs = _prune(d, tmp_path / "transformers", calib_jsonl, monkeypatch, "transformers")
    assert ours["model"]["model_code"] == "builtin"
    assert theirs["model"]["model_code"] == "transformers (--model-code transformers)"
    assert ours["model"]["architecture"] == theirs["model"]["architecture"]
    a, b = _tensors(tmp_path / "builtin"), _tensors(tmp_path / "transformers")
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].equal(b[k]), k


_NO_TRANSFORMERS = """
import sys
from featprune_ext import cli
code = cli.main(sys.argv[1:])
parent = sorted(m for m in ("transformers", "torch._dynamo", "torch.distributed.tensor") if m in sys.modules)
print("IMPORTED", parent)
sys.exit(code)
"""


def test_pruning_run_never_imports_transformers(tiny_model, calib_jsonl, tmp_path):
    """The CLI process itself imports neither transformers nor what it drags in (torch._dynamo,
    torch.distributed.tensor); the tokenizer is loaded in a forked child. Checked on a run whose
    tokens are not cached (the child loads the tokenizer) and on the rerun (nothing loads it)."""
    for out in ("first", "second"):
        proc = subprocess.run([sys.executable, "-c", _NO_TRANSFORMERS, "prune", str(tiny_model("gemma3")),
                               "--out", str(tmp_path / out), "--sparsity", "0.5", "--calib-texts", str(calib_jsonl),
                               "--nsamples", "4", "--seqlen", "16", "--no-progress", "-q"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "IMPORTED []" in proc.stdout, proc.stdout
        report = json.loads((tmp_path / out / "featprune.json").read_text())
        assert report["model"]["model_code"] == "builtin"


def test_bad_model_code_setting_fails_before_calibration(tiny_model, calib_jsonl, tmp_path, monkeypatch):
    """A bad --model-code, or builtin for a family the built-in code does not run, fails before the
    calibration child starts."""
    from featprune_ext import api
    from featprune_ext.errors import InputError

    monkeypatch.setattr(api, "_build_calibration", lambda *a, **k: pytest.fail("calibration started"))
    with pytest.raises(InputError, match="--model-code must be one of"):
        api.prune(tiny_model("llama"), tmp_path / "out", sparsity=0.5, calib_texts=calib_jsonl, nsamples=4,
                  seqlen=16, progress=False, model_code="fast")
    with pytest.raises(InputError, match="--model-code builtin"):
        api.prune(tiny_model("gpt2"), tmp_path / "out", sparsity=0.5, calib_texts=calib_jsonl, nsamples=4,
                  seqlen=16, progress=False, model_code="builtin")
    assert not (tmp_path / "out").exists()
