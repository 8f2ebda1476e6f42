"""featprune's built-in model code (models/) against transformers' own classes, through the engine's
skeleton: the first block's input and every block's output must be bit-identical, per family, dtype,
padding and sequence length (around the sliding windows), or masks could differ."""

from __future__ import annotations

import json

import pytest
import torch

from featprune_ext.engine import Batch, ModelSkeleton, capture_block_calls
from featprune_ext.engine.checkpoint import Checkpoint
from featprune_ext.errors import InputError
from featprune_ext.models import BuiltinConfig, builtin_config
from featprune_ext.models.config import parse_config

BUILTIN_FAMILIES = ("llama", "mistral", "qwen2", "gemma3")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _batches(vocab: int, seed: int) -> list[Batch]:
    """Lengths 1-12 around and at the tiny models' windows (Gemma 4, Mistral 8), with and without
    right padding, batch sizes 1-3."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for length, lengths in ((3, [3]), (7, [7, 5, 2]), (9, [9, 9]), (12, [12, 4]), (1, [1, 1]), (4, [4]), (8, [8, 8])):
        ids = torch.randint(3, vocab, (len(lengths), length), generator=g)
        mask = torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]
        out.append(Batch(ids.masked_fill(~mask, 0), mask, 0))
    return out


def _block_outputs(model_dir, dtype, code: str, monkeypatch, device="cpu", seed=1, pick=slice(None),
                   num_blocks=None) -> tuple[str, list[list[torch.Tensor]]]:
    """(model code, [first block's inputs, block 0's outputs, ...]) per batch: _batches(vocab, seed)[pick]
    through the first num_blocks blocks (default: all)."""
    skel = ModelSkeleton(Checkpoint(model_dir), dtype, model_code=code)
    batches = _batches(skel.config.vocab_size, seed=seed)[pick]
    device = torch.device(device)
    with torch.no_grad():
        skel.load_pre_block(torch.cat([b.ids.reshape(-1) for b in batches]), device, dtype)
        calls, hidden = capture_block_calls(skel.model, skel.blocks, batches, device)
        outs = [list(hidden)]
        for i in range(skel.num_blocks if num_blocks is None else num_blocks):
            block = skel.attach_block(i, skel.read_block(i), device, dtype)
            hidden = [c.run(block, h) for c, h in zip(calls[i], hidden)]
            outs.append(hidden)
            skel.release_block(i)
    return skel.model_code, outs


DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda,
                                               pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")])]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("family", BUILTIN_FAMILIES)
def test_blocks_bit_identical_to_transformers(family, dtype, device, tiny_model, monkeypatch):
    d = tiny_model(family)
    code, ours = _block_outputs(d, DTYPES[dtype], "auto", monkeypatch, device)
    ref_code, theirs = _block_outputs(d, DTYPES[dtype], "transformers", monkeypatch, device)
    assert code == "builtin" and ref_code.startswith("transformers")
    for layer, (a, b) in enumerate(zip(ours, theirs)):
        for batch, (x, y) in enumerate(zip(a, b)):
            assert x.dtype == y.dtype == DTYPES[dtype] and x.shape == y.shape
            assert torch.equal(x, y), f"block {layer - 1} output, batch {batch}: max diff {(x - y).abs().max()}"


def test_real_gemma_and_smollm2_blocks_bit_identical(gemma3_dir, smollm2_dir, monkeypatch):
    """The real checkpoints (bf16 compute, 262k and 49k vocabularies, Gemma's 512-token window not
    reached): embeddings and the first two blocks."""
    for d in (gemma3_dir, smollm2_dir):
        runs = {code: _block_outputs(d, torch.bfloat16, code, monkeypatch, seed=2, pick=slice(1, 3), num_blocks=2)
                for code in ("auto", "transformers")}
        (code, ours), (_, theirs) = runs["auto"], runs["transformers"]
        assert code == "builtin"
        for a, b in zip(ours, theirs):
            assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_module_tree_matches_transformers(tiny_model, monkeypatch):
    """Same parameter names and shapes as transformers' model (checkpoints load unchanged)."""
    for family in BUILTIN_FAMILIES:
        d = tiny_model(family)
        shapes = {}
        for code in ("auto", "transformers"):
            skel = ModelSkeleton(Checkpoint(d), model_code=code)
            shapes[code] = {k: tuple(v.shape) for k, v in skel.model.state_dict().items()}
        assert shapes["auto"] == shapes["transformers"], family


@pytest.mark.parametrize("family", ["gpt2", "bloom", "opt", "mixtral"])
def test_other_families_use_transformers(family, tiny_model, monkeypatch):
    skel = ModelSkeleton(Checkpoint(tiny_model(family)))
    assert skel.model_code.startswith("transformers (model_type")


def _config(family, tiny_model) -> dict:
    return json.loads((tiny_model(family) / "config.json").read_text())


@pytest.mark.parametrize("edit, reason", [
    (lambda c: c.update(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}), "default rope"),
    (lambda c: c.update(hidden_act="gelu_new"), "activation"),
    (lambda c: c.pop("rms_norm_eps"), "lacks rms_norm_eps"),
    (lambda c: c.update(layer_types=["sliding_attention"] * c["num_hidden_layers"]), "layer_types"),
    (lambda c: (c.pop("rope_parameters"), c.update(rope_theta=1e4, rope_scaling={"type": "linear"})), "rope_scaling"),
])
def test_unsupported_settings_fall_back(edit, reason, tiny_model):
    raw = _config("llama", tiny_model)
    assert isinstance(parse_config(raw), BuiltinConfig)
    edit(raw)
    found = parse_config(raw)
    assert isinstance(found, str) and reason in found


@pytest.mark.parametrize("family, key", [("mistral", "sliding_window"), ("mistral", "num_key_value_heads"),
                                         ("qwen2", "num_key_value_heads"), ("gemma3", "head_dim"),
                                         ("gemma3", "num_key_value_heads"), ("gemma3", "query_pre_attn_scalar"),
                                         ("gemma3", "sliding_window")])
def test_keys_whose_default_differs_per_family_are_required(family, key, tiny_model):
    """transformers fills a missing key with its class default (Mistral's window 4096, Gemma 3's head_dim
    256, ...): the built-in code does not guess those, it leaves the model to transformers."""
    raw = _config(family, tiny_model)
    assert isinstance(parse_config(raw), BuiltinConfig)
    raw.pop(key)
    found = parse_config(raw)
    assert isinstance(found, str) and key in found


def test_untied_checkpoint_without_the_key_loads(tiny_model, tmp_path, monkeypatch):
    """Without tie_word_embeddings the built-in model ties (the head is never run): a checkpoint with a
    separate lm_head.weight still loads, and its head is copied through as an unpruned tensor."""
    import shutil

    from tiny_models import edit_tensor

    d = tmp_path / "untied"
    shutil.copytree(tiny_model("llama"), d)
    raw = json.loads((d / "config.json").read_text())
    raw.pop("tie_word_embeddings", None)
    (d / "config.json").write_text(json.dumps(raw))
    edit_tensor(d, "lm_head.weight", lambda w: w + 1)  # the tiny Llama is untied: its own head
    skel = ModelSkeleton(Checkpoint(d))
    assert skel.model_code == "builtin" and "lm_head.weight" in skel.other_keys


def test_old_rope_format_and_defaults(tiny_model):
    """rope_theta at the top level (before transformers 5) and configs without attention_bias/head_dim."""
    raw = _config("llama", tiny_model)
    theta = raw.pop("rope_parameters")["rope_theta"]
    for key in ("attention_bias", "mlp_bias", "head_dim", "layer_types", "tie_word_embeddings"):
        raw.pop(key, None)
    raw["rope_theta"] = theta
    cfg = parse_config(raw)
    assert isinstance(cfg, BuiltinConfig)
    assert cfg.rope_thetas == {"full_attention": theta} and cfg.attention_bias is False and cfg.tie_word_embeddings
    assert cfg.head_dim == raw["hidden_size"] // raw["num_attention_heads"]
    with pytest.raises(AttributeError):
        cfg.no_such_key  # noqa: B018 (getattr's default must apply)


def test_gemma3_per_layer_rope_and_window(tiny_model):
    cfg = parse_config(_config("gemma3", tiny_model))
    assert set(cfg.rope_thetas) == {"full_attention", "sliding_attention"} and cfg.sliding_window == 4
    assert cfg.rope_thetas["full_attention"] != cfg.rope_thetas["sliding_attention"]


def test_model_code_option(tiny_model):
    raw = _config("llama", tiny_model)
    assert builtin_config(raw, "transformers") == "--model-code transformers"
    chosen = [builtin_config(raw, code) for code in ("builtin", "auto")] + [builtin_config(raw)]
    assert all(isinstance(c, BuiltinConfig) and vars(c) == vars(chosen[0]) for c in chosen)
    with pytest.raises(InputError, match="--model-code must be one of auto, builtin, transformers"):
        builtin_config(raw, "fast")
    with pytest.raises(InputError, match="--model-code builtin: .*model_type"):  # a family it does not run
        builtin_config(_config("gpt2", tiny_model), "builtin")


@pytest.mark.parametrize("window", [None, 4])
def test_masks_match_transformers(window, tiny_model):
    """sdpa_bool_mask against transformers' own mask builders: the same None-or-mask choice (it picks
    SDPA's kernel) and the same values, for every length 1-10 around the window, padded or not."""
    from transformers import AutoConfig
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

    from featprune_ext.models.masks import sdpa_bool_mask

    config = AutoConfig.from_pretrained(tiny_model("gemma3"))
    config._attn_implementation = "sdpa"
    build = create_causal_mask if window is None else create_sliding_window_causal_mask
    for length in range(1, 11):
        for lengths in ([length], [length, max(1, length - 3)], [length, length]):
            mask2d = (torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]).long()
            embeds = torch.zeros(len(lengths), length, 8)
            theirs = build(config=config, inputs_embeds=embeds, attention_mask=mask2d, cache=None,
                           position_ids=torch.arange(length).unsqueeze(0))
            ours = sdpa_bool_mask(mask2d, window)
            assert (ours is None) == (theirs is None), (length, lengths)
            if ours is not None:
                assert ours.shape == theirs.shape and torch.equal(ours, theirs), (length, lengths)


def test_class_names_are_transformers_names(tiny_model, monkeypatch):
    """--targets/--ignore class patterns (engine/select.py) select the same modules with either code."""
    for family in BUILTIN_FAMILIES:
        classes = {}
        for code in ("auto", "transformers"):
            skel = ModelSkeleton(Checkpoint(tiny_model(family)), model_code=code)
            classes[code] = {name: type(m).__name__ for name, m in skel.model.named_modules()}
        ours, theirs = classes["auto"], classes["transformers"]
        assert {k: ours[k] for k in theirs if k in ours} == {k: theirs[k] for k in theirs if k in ours}
        # modules without parameters that the built-in code computes inline
        assert all(k.endswith((".act_fn", "rotary_emb")) for k in set(theirs) - set(ours)), set(theirs) - set(ours)
        assert set(ours) <= set(theirs)
