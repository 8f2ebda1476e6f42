"""`--structured` through the streaming engine: its output equals prune_in_memory's (itself checked against the
naive pruner in test_structured_agreement.py) for Llama, Mistral, Qwen2, Gemma 3, and experts= on Mixtral,
Qwen2-MoE and Qwen3-MoE (with the per-language routing report); it loads with stock
transformers and runs; it combines with --sparsity; a killed run resumes to byte-identical output; bad
specs and options exit 2 through the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from featprune_ext import cli
from featprune_ext.data.calibration_set import CalibrationSet
from featprune_ext.engine import make_batches, prune_model
from featprune_ext.methods import get_method
from featprune_ext.structured import (
    Options,
    StructuredRequest,
    parse_spec,
    prune_in_memory,
    read_checkpoint,
    validate,
)

BATCH = 4


def _calibration(model_dir):
    from tiny_models import TEXTS
    from transformers import AutoTokenizer

    return CalibrationSet.from_texts(TEXTS, AutoTokenizer.from_pretrained(model_dir), 12, 32)


def _in_memory(model_dir, spec, opts):
    from transformers import AutoConfig, AutoModelForCausalLM

    plan = validate(parse_spec(spec), AutoConfig.from_pretrained(model_dir))
    cal = _calibration(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    config = json.loads((model_dir / "config.json").read_text())
    return prune_in_memory(model, read_checkpoint(model_dir), config, plan, make_batches(cal, BATCH, 0),
                           cal.bucket_names, opts)


def _engine(model_dir, out, spec, opts, sparsity=None, model_code="transformers"):
    return prune_model(model_dir, out, calibration=_calibration(model_dir), method=get_method("wanda"),
                       sparsity=sparsity, batch_size=BATCH, progress=False, model_code=model_code,
                       structured=StructuredRequest(parse_spec(spec), opts))


def _written(out):
    tensors = {}
    for f in sorted(out.glob("*.safetensors")):
        tensors.update(load_file(f))
    return tensors


CASES = [*[(f, "mlp=0.25,heads=0.5,blocks=1", "wanda", "ls") for f in ("llama", "mistral", "qwen2", "gemma3")],
         ("qwen2", "mlp=0.5", "magnitude", "none"),
         ("llama", "mlp=0.25,heads=0.5", "wanda", "adam"),
         ("gemma3", "blocks=2", "wanda", "none"),
         ("mixtral", "experts=0.4,blocks=1", "wanda", "none"),
         ("qwen2_moe", "experts=0.4", "wanda", "none"),
         ("qwen3_moe", "experts=0.2,heads=0.5", "wanda", "ls")]


@pytest.mark.parametrize("family,spec,score,recovery", CASES)
def test_engine_equals_in_memory_and_loads(model_dir, tmp_path, family, spec, score, recovery):
    from transformers import AutoModelForCausalLM

    d = model_dir(family)
    opts = Options(score=score, recovery=recovery, damp=0.05, adam_steps=10, adam_lr=0.05, adam_tokens=64, seed=3)
    cut, new_config, expected = _in_memory(d, spec, opts)
    out = tmp_path / "out"
    report = _engine(d, out, spec, opts)
    assert not (tmp_path / "out.partial").exists()
    got = _written(out)
    assert sorted(got) == sorted(cut)
    tol = 3e-4 if recovery == "adam" else 1e-4
    for key, t in cut.items():
        assert got[key].shape == t.shape, key
        torch.testing.assert_close(got[key].float(), t.float(), rtol=tol, atol=tol, msg=key)
    index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    assert sorted(index) == sorted(cut)
    assert json.loads((out / "config.json").read_text()) == new_config
    section = report["structured"]
    assert json.loads((out / "featprune.json").read_text())["structured"] == section
    assert section.get("dropped_blocks", []) == expected.get("dropped_blocks", [])
    assert [b["output_index"] for b in section["blocks"]] == list(range(len(section["blocks"])))
    cut_blocks = [b for b in section["blocks"] if set(b) - {"index", "output_index"}]
    for mine, theirs in zip(cut_blocks, expected["blocks"], strict=True):
        assert mine["index"] == theirs["index"]
        for k in ("kept_kv_groups", "removed_channels"):
            assert mine.get(k) == theirs.get(k)
    assert section.get("experts", []) == expected.get("experts", [])  # kept experts and their saliency
    assert section.get("routing") == expected.get("routing")  # per language: tokens and top experts
    # stock transformers loads what was written, and it runs
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    b = make_batches(_calibration(d), BATCH, 0)[0]
    logits = model(input_ids=b.ids, attention_mask=b.mask.long()).logits
    assert logits.shape[:2] == b.ids.shape and bool(torch.isfinite(logits).all())
    assert sum(p.numel() for p in model.parameters()) < sum(
        p.numel() for p in AutoModelForCausalLM.from_pretrained(d).parameters())


def test_builtin_model_code_chooses_the_same(model_dir, tmp_path):
    """featprune's own forward (the engine's default) picks the same channels, groups and blocks."""
    d = model_dir("qwen2")
    opts = Options(recovery="ls", damp=0.05)
    a = _engine(d, tmp_path / "a", "mlp=0.25,heads=0.5,blocks=1", opts)
    b = _engine(d, tmp_path / "b", "mlp=0.25,heads=0.5,blocks=1", opts, model_code="builtin")
    assert a["structured"]["blocks"] == b["structured"]["blocks"]
    assert a["structured"]["dropped_blocks"] == b["structured"]["dropped_blocks"]
    for key, t in _written(tmp_path / "a").items():
        torch.testing.assert_close(_written(tmp_path / "b")[key], t, rtol=1e-4, atol=1e-4, msg=key)


def test_structured_then_sparsity_on_the_kept_matrices(model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    d = model_dir("llama")
    report = _engine(d, tmp_path / "out", "mlp=0.5,blocks=1", Options(recovery="none"), sparsity=0.5)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    dense = json.loads((d / "config.json").read_text())
    assert model.config.intermediate_size == dense["intermediate_size"] // 2
    assert model.config.num_hidden_layers == dense["num_hidden_layers"] - 1
    for layer in model.model.layers:
        for lin in (layer.mlp.down_proj, layer.self_attn.q_proj):
            w = lin.weight
            assert ((w == 0).sum(dim=1) == w.shape[1] // 2).all()  # wanda's per-row 50% on the cut shape
    assert 0.49 < report["overall_sparsity"] < 0.51


def test_experts_then_sparsity_on_the_kept_experts(model_dir, tmp_path):
    d = model_dir("qwen2_moe")
    report = _engine(d, tmp_path / "out", "experts=0.4", Options(recovery="none"), sparsity=0.5)
    dense = json.loads((d / "config.json").read_text())
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["num_experts"] == dense["num_experts"] - round(0.4 * dense["num_experts"])
    experts = {k: t for k, t in _written(tmp_path / "out").items() if ".experts." in k}
    assert {int(k.split(".experts.")[1].split(".")[0]) for k in experts} == set(range(config["num_experts"]))
    for key, w in experts.items():
        assert ((w == 0).sum(dim=1) == w.shape[1] // 2).all(), key  # pruned, and written pruned
    assert 0.49 < report["overall_sparsity"] < 0.51
    reported = [k for layer in report["layers"] for k in layer["matrices"] if ".experts." in k]
    assert len(reported) == len(experts)  # the removed experts' matrices are not reported as pruned


# -- resume and CLI errors (subprocesses: a real kill) --
def _cmd(model_dir, out, calib, *extra):
    return [sys.executable, "-m", "featprune_ext.cli", "prune", str(model_dir), "--out", str(out),
            "--calib-texts", str(calib), "--nsamples", "8", "--seqlen", "24", "--batch-size", "3", "--no-progress",
            "--structured", "mlp=0.25,heads=0.5,blocks=1", "--recovery", "adam", "--recovery-steps", "5",
            "--recovery-tokens", "32", "--recovery-fit-tokens", "64", *extra]


def _run(args, **env):
    return subprocess.run(args, capture_output=True, text=True, timeout=600, env={**os.environ, **env})


def test_kill_then_resume_is_byte_identical(model_dir, calib_jsonl, tmp_path):
    src = model_dir("gemma3")  # 4 blocks, sliding and global layers
    ref, out, partial = tmp_path / "ref", tmp_path / "out", tmp_path / "out.partial"
    done = _run(_cmd(src, ref, calib_jsonl))
    assert done.returncode == 0, done.stderr
    killed = _run(_cmd(src, out, calib_jsonl), FEATPRUNE_TEST_DIE_AFTER_BLOCK="1")
    assert killed.returncode == -signal.SIGKILL
    assert not out.exists()
    progress = json.loads((partial / "progress.json").read_text())
    assert progress["blocks_done"] == 2 and len(progress["structured"]["dropped_blocks"]) == 1
    resumed = _run(_cmd(src, out, calib_jsonl, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    files = sorted(p.name for p in ref.iterdir() if p.name != "featprune.json")
    assert sorted(p.name for p in out.iterdir() if p.name != "featprune.json") == files
    for name in files:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    report, ref_report = (json.loads((p / "featprune.json").read_text()) for p in (out, ref))
    assert report["resumed_from_block"] == 2
    assert report["structured"]["options"]["fit_tokens"] == 64  # fewer than the calibration's: a seeded draw
    assert {b["mlp_refit_steps"] for b in report["structured"]["blocks"] if "mlp_refit_steps" in b} == {5}
    strip = ("dense_pass_s",)
    assert ({k: v for k, v in report["structured"].items() if k not in strip}
            == {k: v for k, v in ref_report["structured"].items() if k not in strip})


def test_heads_with_adam_on_a_bf16_checkpoint(tmp_path, calib_jsonl, tiny_tokenizer_dir):
    """The attention refit replays its calls in fp32 (the trained copies' dtype) on a bf16 checkpoint."""
    from tiny_models import build_tiny_model
    from transformers import AutoModelForCausalLM

    src = build_tiny_model("llama", tmp_path / "bf16", tokenizer_dir=tiny_tokenizer_dir, dtype=torch.bfloat16)
    out = tmp_path / "out"
    done = _run(_cmd(src, out, calib_jsonl))
    assert done.returncode == 0, done.stderr
    written = _written(out)
    assert {t.dtype for t in written.values()} == {torch.bfloat16}
    kept = json.loads((out / "featprune.json").read_text())["structured"]["blocks"]
    assert all(len(b["kept_kv_groups"]) == 1 for b in kept if "kept_kv_groups" in b)
    first = kept[0]
    o_cut = written[f"model.layers.{first['output_index']}.self_attn.o_proj.weight"]
    o_dense = load_file(src / "model.safetensors")[f"model.layers.{first['index']}.self_attn.o_proj.weight"]
    width = o_cut.shape[1]  # one group's query heads
    group = first["kept_kv_groups"][0]
    assert not torch.equal(o_cut, o_dense[:, group * width:(group + 1) * width])  # refit, not just cut
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert torch.isfinite(model(input_ids=torch.tensor([[3, 4, 5]])).logits).all()


@pytest.mark.parametrize("extra,message", [
    (["--structured", "mlp=1.5"], "fraction in [0, 1)"),
    (["--structured", "mlp=0.001"], "removes none"),
    (["--structured", "blocks=4"], "at least one must stay"),
    (["--structured", "experts=0.5"], "is dense"),
    (["--structured", "wings=0.5"], "unknown key"),
    (["--structured", "mlp=0.25", "--pattern", "16:32"], "48 input features after the --structured cut"),
    (["--sparsity", "0.5", "--recovery", "ls"], "--recovery does not apply without --structured"),
    (["--structured", "mlp=0.25", "--recovery", "none", "--recovery-steps", "10"], "applies to --recovery adam"),
    (["--structured", "mlp=0.25", "--layerwise", "owl", "--sparsity", "0.5"], "--layerwise does not combine"),
])
def test_cli_errors_exit_2(model_dir, calib_jsonl, tmp_path, capsys, extra, message):
    src = model_dir("llama")
    args = ["prune", str(src), "--out", str(tmp_path / "out"), "--calib-texts", str(calib_jsonl), "--nsamples", "4",
            "--seqlen", "16", "--no-progress", *extra]
    assert cli.main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


@pytest.mark.slow
def test_smollm2_structured_through_the_cli(smollm2_dir, calib_jsonl, tmp_path):
    """The real model: mlp= and blocks= cut by the engine, loaded by stock transformers, and still a
    language model (its held-in perplexity stays finite and within reach of the dense model's)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "out"
    args = ["prune", str(smollm2_dir), "--out", str(out), "--calib-texts", str(calib_jsonl), "--nsamples", "4",
            "--seqlen", "32", "--no-progress", "--quiet", "--structured", "mlp=0.25,blocks=1", "--recovery", "ls"]
    assert cli.main(args) == 0
    dense_cfg = json.loads((smollm2_dir / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    inter = dense_cfg["intermediate_size"]
    assert model.config.intermediate_size == inter - round(0.25 * inter)
    assert model.config.num_hidden_layers == dense_cfg["num_hidden_layers"] - 1
    report = json.loads((out / "featprune.json").read_text())["structured"]
    assert len(report["dropped_blocks"]) == 1 and len(report["blocks"]) == dense_cfg["num_hidden_layers"] - 1
    dense = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    assert sum(p.numel() for p in model.parameters()) < 0.9 * sum(p.numel() for p in dense.parameters())
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    ids = tok("The committee will meet again next week to discuss the budget for the new school.",
              return_tensors="pt")["input_ids"]

    def ppl(m):
        with torch.no_grad():
            return float(torch.exp(m(input_ids=ids, labels=ids).loss))

    assert ppl(model) < 20 * ppl(dense)
