"""The structured pruner (featprune_ext.structured) against the independent naive one (tests/helpers/
naive_structured.py) on tiny random models of every family: the same channels, groups, blocks and experts
chosen, the same cut and refit tensors within fp tolerance; and the cut model loads with stock
AutoModelForCausalLM.from_pretrained and runs."""

from __future__ import annotations

import json

import pytest
import torch

from featprune_ext.data.calibration_set import CalibrationSet
from featprune_ext.engine import make_batches
from featprune_ext.structured import Options, parse_spec, prune_in_memory, read_checkpoint, validate, write_model


def _batches(model_dir):
    from tiny_models import TEXTS
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    cal = CalibrationSet.from_texts(TEXTS, tok, 12, 32)
    return make_batches(cal, 4, 0), cal.bucket_names


def _run_library(model_dir, spec, opts):
    from transformers import AutoConfig, AutoModelForCausalLM

    plan = validate(parse_spec(spec), AutoConfig.from_pretrained(model_dir))
    batches, names = _batches(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    config = json.loads((model_dir / "config.json").read_text())
    cut, new_config, report = prune_in_memory(model, read_checkpoint(model_dir), config, plan, batches, names, opts)
    return plan, batches, cut, new_config, report


CASES = [  # family, spec, score, recovery[:target[:tokens the fit keeps]]
    *[(f, "mlp=0.25,heads=0.5,blocks=1", "wanda", "ls") for f in ("llama", "mistral", "qwen2", "gemma3")],
    *[(f, "mlp=0.5", "magnitude", "none") for f in ("llama", "qwen2", "gemma3")],
    *[(f, "mlp=0.25", "wanda", "adam") for f in ("llama", "gemma3")],  # target "model", every token kept
    ("llama", "mlp=0.25,blocks=1", "wanda", "adam:block:100"),  # 100 of the ~300 calibration tokens
    ("gemma3", "mlp=0.25,blocks=1", "wanda", "adam:model:100"),
    ("mixtral", "experts=0.4,blocks=1", "wanda", "none"),
    ("qwen2_moe", "experts=0.4", "wanda", "none"),
    ("qwen3_moe", "experts=0.2,heads=0.5", "wanda", "ls"),
]


@pytest.mark.parametrize("family,spec,score,recovery", CASES)
def test_agrees_with_naive(model_dir, family, spec, score, recovery):
    from naive_structured import naive_structured

    d = model_dir(family)
    recovery, target, fit = (recovery.split(":") + ["model", "8192"])[:3]
    opts = Options(score=score, recovery=recovery, damp=0.05, adam_steps=12, adam_lr=0.05, adam_tokens=64,
                   fit_tokens=int(fit), target=target, seed=3)
    plan, batches, cut, _, report = _run_library(d, spec, opts)
    expected, choices = naive_structured(d, [(b.ids, b.mask) for b in batches], mlp=plan.mlp_remove,
                                         kv=plan.kv_remove, blocks=plan.blocks_remove, experts=plan.experts_remove,
                                         score=score, recovery=recovery, damp=opts.damp, adam_steps=opts.adam_steps,
                                         adam_lr=opts.adam_lr, adam_tokens=opts.adam_tokens, target=opts.target,
                                         seed=opts.seed, fit_tokens=opts.fit_tokens)
    assert recovery != "adam" or sum(int(b.mask.sum()) for b in batches) > 100  # the capped cases do subsample
    # the same choices
    assert report.get("dropped_blocks", []) == choices["dropped"]
    for entry in report["blocks"]:
        i = entry["index"]
        if plan.kv_remove:
            assert entry["kept_kv_groups"] == choices["kept_groups"][i]
        if plan.mlp_remove:
            assert entry["removed_channels"] == choices["removed_channels"][i]
    assert len(report["blocks"]) == (plan.num_blocks - plan.blocks_remove if (plan.mlp_remove or plan.kv_remove)
                                     else 0)
    for entry in report.get("experts", []):
        assert entry["kept_experts"] == choices["kept_experts"][entry["index"]]
    assert len(report.get("experts", [])) == (plan.num_blocks if plan.experts_remove else 0)
    # the same tensors
    assert sorted(cut) == sorted(expected)
    for key in cut:
        assert cut[key].shape == expected[key].shape, key
        tol = 2e-4 if recovery == "adam" else 1e-4
        torch.testing.assert_close(cut[key].float(), expected[key].float(), rtol=tol, atol=tol, msg=key)


@pytest.mark.parametrize("family,spec", [("llama", "mlp=0.5,heads=0.5,blocks=1"), ("mistral", "heads=0.5,mlp=0.25"),
                                         ("qwen2", "mlp=0.25,heads=0.5,blocks=2"), ("gemma3", "blocks=1,mlp=0.5"),
                                         ("gemma3", "heads=0.5,blocks=2"),
                                         ("mixtral", "experts=0.4,heads=0.5,blocks=1"),
                                         ("qwen2_moe", "experts=0.4,blocks=1"), ("qwen3_moe", "experts=0.2")])
def test_cut_model_loads_with_stock_transformers(model_dir, tmp_path, family, spec):
    from transformers import AutoModelForCausalLM

    d = model_dir(family)
    plan, batches, cut, new_config, report = _run_library(d, spec, Options(recovery="ls"))
    out = write_model(d, tmp_path / "out", cut, new_config, report)
    assert not (tmp_path / "out.partial").exists()
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    cfg = model.config
    assert cfg.num_hidden_layers == plan.num_blocks - plan.blocks_remove == len(model.model.layers)
    if plan.mlp_remove:
        assert cfg.intermediate_size == plan.intermediate_size - plan.mlp_remove
    if plan.kv_remove:
        assert cfg.num_key_value_heads == plan.num_kv_heads - plan.kv_remove
        assert cfg.num_attention_heads == cfg.num_key_value_heads * plan.heads_per_group
        assert cfg.head_dim == plan.head_dim
    if plan.experts_remove:
        assert (getattr(cfg, "num_local_experts", None) or cfg.num_experts) == plan.num_experts - plan.experts_remove
    # every loaded parameter is the cut tensor written for it
    state = model.state_dict()
    for key, t in cut.items():
        if key in state:
            torch.testing.assert_close(state[key], t.float(), rtol=0, atol=0, msg=key)
    params = sum(p.numel() for p in model.parameters())
    dense = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(d).parameters())
    assert params < dense
    b = batches[0]
    logits = model(input_ids=b.ids, attention_mask=b.mask.long()).logits
    assert logits.shape[:2] == b.ids.shape and bool(torch.isfinite(logits).all())


@pytest.mark.parametrize("family", ["gemma3", "qwen2"])
def test_dropping_blocks_keeps_the_per_layer_attention(model_dir, tmp_path, family):
    """A blocks-only cut reloads into exactly the dense model with those blocks skipped: Gemma 3's
    sliding/full layer_types (and Qwen2's) follow the kept blocks."""
    from naive_structured import _Skip
    from transformers import AutoModelForCausalLM

    d = model_dir(family)
    plan, batches, cut, new_config, report = _run_library(d, "blocks=2", Options())
    out = write_model(d, tmp_path / "out", cut, new_config, report)
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    dense = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    types = list(getattr(dense.config, "layer_types", None) or [])
    kept = [i for i in range(plan.num_blocks) if i not in report["dropped_blocks"]]
    if types:
        assert list(reloaded.config.layer_types) == [types[i] for i in kept]
    for i in report["dropped_blocks"]:
        dense.model.layers[i] = _Skip()
    with torch.no_grad():
        for b in batches:
            want = dense(input_ids=b.ids, attention_mask=b.mask.long()).logits
            got = reloaded(input_ids=b.ids, attention_mask=b.mask.long()).logits
            torch.testing.assert_close(got[b.mask], want[b.mask], rtol=1e-5, atol=1e-5)


def test_routing_report_counts_every_routed_token(model_dir):
    d = model_dir("mixtral")
    plan, batches, _, _, report = _run_library(d, "experts=0.2", Options())
    tokens = sum(int(b.mask.sum()) for b in batches)
    assert len(report["routing"]) == plan.num_blocks
    for block in report["routing"]:
        (name, entry), = block.items()
        assert entry["tokens"] == tokens
        shares = [s for _, s in entry["top_experts"]]
        assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1.0 + 1e-9
