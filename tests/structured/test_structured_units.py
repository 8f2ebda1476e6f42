"""The pure pieces of structured pruning: the spec and its errors, the tie rule, the cuts, the config
rewrite, the least-squares refit and the Adam refit."""

from __future__ import annotations

import pytest
import torch

from featprune_ext.errors import InputError
from featprune_ext.structured import parse_spec, validate
from featprune_ext.structured.layout import LAYOUTS, moe_keys
from featprune_ext.structured.recovery import adam_refit, refit_consumer, token_loss
from featprune_ext.structured.scores import choose_blocks, group_scores, keep_lowest_removed
from featprune_ext.structured.steps import fit_batches, fit_token_masks
from featprune_ext.structured.surgery import cut_attention, cut_experts, cut_mlp, rewrite_config


def _config(family, **over):
    import transformers
    from tiny_models import FAMILIES

    cls_name, kwargs = FAMILIES[family]
    return getattr(transformers, cls_name)(vocab_size=384, **{**kwargs, **over})


# ------------------------------------------------------------------------------------------ spec
def test_parse_spec_reads_every_key():
    spec = parse_spec(" mlp=0.25, heads=0.5,blocks=2 ,experts=0.125")
    assert (spec.mlp, spec.heads, spec.blocks, spec.experts) == (0.25, 0.5, 2, 0.125)
    assert str(parse_spec("blocks=3")) == "blocks=3"


@pytest.mark.parametrize("text,words", [("", "empty"), ("mlp", "not KEY=VALUE"), ("attn=0.1", "unknown key 'attn'"),
                                        ("mlp=0.1,mlp=0.2", "given twice"), ("mlp=1.0", "in [0, 1)"),
                                        ("mlp=-0.1", "in [0, 1)"), ("mlp=nan", "in [0, 1)"),
                                        ("blocks=1.5", "whole number"), ("blocks=-1", ">= 0"),
                                        ("mlp=0", "removes nothing"), ("heads=x", "must be a fraction")])
def test_parse_spec_errors_name_the_problem(text, words):
    with pytest.raises(InputError, match=words.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        parse_spec(text)


def test_validate_counts_round_half_up():
    plan = validate(parse_spec("mlp=0.25,heads=0.25,blocks=1"), _config("llama", num_key_value_heads=2))
    assert (plan.mlp_remove, plan.kv_remove, plan.blocks_remove) == (16, 1, 1)  # 0.25 of 2 groups: 1
    assert plan.heads_per_group == 2 and plan.head_dim == 8


@pytest.mark.parametrize("family,spec,words", [
    ("llama", "mlp=0.999", "leaves 0"),  # a fraction that leaves no channel
    ("gemma3", "heads=0.5", "has 1 key/value groups and at least 1 must stay, so heads= cannot remove any"),
    ("gemma3", "heads=0.25", "cannot remove any"),  # not "the smallest fraction that removes one is 0.5"
    ("llama", "heads=0.1", "removes none; the smallest fraction that removes one is 0.25"),
    ("llama", "blocks=3", "the model has 3 blocks"),
    ("llama", "experts=0.5", "is dense"),
    ("mixtral", "experts=0.8", "at least 2 must stay"),  # top-2 routing needs two experts
    ("mixtral", "mlp=0.25", "use experts="),
    ("gpt2", "heads=0.25", "does not know the layout of 'gpt2'"),
    ("bloom", "blocks=1", "not supported for 'bloom'"),
])
def test_validate_refuses_what_cannot_be_cut(family, spec, words):
    with pytest.raises(InputError, match=words):
        validate(parse_spec(spec), _config(family))


# ------------------------------------------------------------------------------------------ scores
def test_ties_remove_the_lower_index_first():
    assert keep_lowest_removed(torch.tensor([1.0, 1.0, 0.0, 1.0]), 2).tolist() == [1, 3]
    assert choose_blocks([0.5, 0.1, 0.5, 0.1], 3) == [0, 1, 3]


def test_group_score_is_the_norm_of_its_heads_feature_scores():
    w = torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]])  # o_proj: 2 groups of 2 features
    rms = torch.tensor([1.0, 5.0, 0.5, 1.0])
    torch.testing.assert_close(group_scores(w, rms, 2), torch.tensor([1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(group_scores(w, None, 2, "magnitude"), torch.tensor([1.0, 2.0], dtype=torch.float64))


# ------------------------------------------------------------------------------------------ surgery
def test_cut_attention_takes_the_query_heads_of_each_kept_group():
    layout = LAYOUTS["qwen2"]
    hd, hpg, kv = 2, 2, 3
    t = {"self_attn.q_proj.weight": torch.arange(kv * hpg * hd).float()[:, None].repeat(1, 3),
         "self_attn.q_proj.bias": torch.arange(kv * hpg * hd).float(),
         "self_attn.k_proj.weight": torch.arange(kv * hd).float()[:, None], "self_attn.k_proj.bias": torch.zeros(6),
         "self_attn.v_proj.weight": torch.arange(kv * hd).float()[:, None], "self_attn.v_proj.bias": torch.zeros(6),
         "self_attn.o_proj.weight": torch.arange(kv * hpg * hd).float()[None, :].repeat(3, 1),
         "self_attn.q_norm.weight": torch.ones(hd)}
    out = cut_attention(t, layout, [0, 2], hpg, hd)
    assert out["self_attn.q_proj.weight"][:, 0].tolist() == [0, 1, 2, 3, 8, 9, 10, 11]
    assert out["self_attn.q_proj.bias"].tolist() == [0, 1, 2, 3, 8, 9, 10, 11]
    assert out["self_attn.k_proj.weight"][:, 0].tolist() == [0, 1, 4, 5]
    assert out["self_attn.o_proj.weight"][0].tolist() == [0, 1, 2, 3, 8, 9, 10, 11]
    assert out["self_attn.q_norm.weight"] is t["self_attn.q_norm.weight"]  # per head_dim: unchanged
    assert t["self_attn.q_proj.weight"].shape[0] == 12  # the input is not modified


def test_cut_mlp_rows_and_columns():
    t = {"mlp.gate_proj.weight": torch.arange(4.0)[:, None], "mlp.up_proj.weight": torch.arange(4.0)[:, None] + 10,
         "mlp.down_proj.weight": torch.arange(4.0)[None, :] + 20}
    out = cut_mlp(t, LAYOUTS["llama"], [1, 3])
    assert out["mlp.gate_proj.weight"][:, 0].tolist() == [1, 3]
    assert out["mlp.up_proj.weight"][:, 0].tolist() == [11, 13]
    assert out["mlp.down_proj.weight"][0].tolist() == [21, 23]


def test_cut_experts_renumbers_and_cuts_the_router():
    t = {f"mlp.experts.{e}.{leaf}.weight": torch.full((2, 2), float(e)) for e in range(4)
         for leaf in ("gate_proj", "up_proj", "down_proj")}
    t["mlp.gate.weight"] = torch.arange(4.0)[:, None]
    t["mlp.shared_expert_gate.weight"] = torch.ones(1, 2)
    moe = moe_keys(t)
    assert moe.router == "mlp.gate.weight" and moe.num_experts == 4
    out = cut_experts(t, moe, [1, 3])
    assert sorted(k for k in out if ".experts." in k) == sorted(f"mlp.experts.{e}.{leaf}.weight" for e in (0, 1)
                                                              for leaf in ("gate_proj", "up_proj", "down_proj"))
    assert float(out["mlp.experts.1.down_proj.weight"][0, 0]) == 3.0
    assert out["mlp.gate.weight"][:, 0].tolist() == [1, 3]
    assert "mlp.shared_expert_gate.weight" in out


def test_rewrite_config_updates_counts_and_per_layer_lists():
    cfg = {"model_type": "qwen2_moe", "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 4,
           "hidden_size": 64, "num_experts": 6, "num_experts_per_tok": 2, "mlp_only_layers": [1, 3],
           "layer_types": ["a", "b", "c", "d"], "max_window_layers": 3}
    plan = validate(parse_spec("heads=0.25,experts=0.5,blocks=1"),
                    _config("qwen2_moe", num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
                            hidden_size=64, num_experts=6, head_dim=None))
    out = rewrite_config(cfg, plan, dropped_blocks=[1])
    assert out["num_hidden_layers"] == 3 and out["layer_types"] == ["a", "c", "d"]
    assert out["mlp_only_layers"] == [2] and out["max_window_layers"] == 2
    assert (out["num_attention_heads"], out["num_key_value_heads"], out["head_dim"]) == (6, 3, 8)
    assert out["num_experts"] == 3 and cfg["num_experts"] == 6
    wrapped = rewrite_config({"text_config": dict(cfg)}, plan, dropped_blocks=[0])
    assert wrapped["text_config"]["num_hidden_layers"] == 3


# ------------------------------------------------------------------------------------------ recovery
def test_refit_is_the_least_squares_solution_and_a_large_damp_keeps_the_weights():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(500, 6, generator=gen, dtype=torch.float64)
    x[:, 1] += x[:, 4]  # correlated features: something for the refit to use
    w = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    keep = [0, 1, 3]
    refit = refit_consumer(w, x.t() @ x, keep, damp=1e-9)
    lstsq = torch.linalg.lstsq(x[:, keep], x @ w.t()).solution.t()
    torch.testing.assert_close(refit, lstsq, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(refit_consumer(w, x.t() @ x, keep, damp=1e9), w[:, keep], rtol=1e-6, atol=1e-6)
    err = lambda m: float(((x[:, keep] @ m.t() - x @ w.t()) ** 2).sum())
    assert err(refit) < err(w[:, keep])


def test_adam_refit_is_deterministic_and_reduces_the_error():
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 16, bias=False), torch.nn.SiLU(), torch.nn.Linear(16, 8, bias=False))
    x = torch.randn(256, 8)
    with torch.no_grad():
        y = mlp(x)
    params = {"0.weight": mlp[0].weight.data[:12].clone(), "2.weight": mlp[2].weight.data[:, :12].clone()}
    loss = token_loss(mlp, x, y, 64)
    a = adam_refit(params, loss, steps=50, lr=1e-2, seed=1)
    b = adam_refit(params, loss, steps=50, lr=1e-2, seed=1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    err = lambda p: float(loss(p, torch.Generator().manual_seed(9)))
    assert err(a) < 0.7 * err(params)


def test_adam_refit_of_cut_attention_replays_its_calls(tiny_model):
    """call_loss: the cut attention (half its key/value groups) called as the model calls it, with rotary
    embeddings and mask; Adam lowers its error to the dense attention's output."""
    from tiny_models import TEXTS
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from featprune_ext.structured.recovery import call_loss

    d = tiny_model("llama")
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(d)
    attn = model.model.layers[1].self_attn
    calls, outputs, masks = [], [], []

    def keep(module, args, kwargs, out):
        calls.append((args, dict(kwargs)))
        outputs.append(out[0])

    hook = attn.register_forward_hook(keep, with_kwargs=True)
    with torch.no_grad():
        for text in TEXTS[:4]:
            ids = tok(text, return_tensors="pt")["input_ids"]
            model(input_ids=ids, use_cache=False)
            masks.append(torch.ones_like(ids, dtype=torch.bool))
    hook.remove()
    dense = {f"{p}.weight": getattr(attn, p).weight.data for p in ("q_proj", "k_proj", "v_proj", "o_proj")}
    cut = cut_attention({f"self_attn.{k}": v for k, v in dense.items()}, LAYOUTS["llama"], [1], 2, 8)
    params = {k.removeprefix("self_attn."): v for k, v in cut.items()}
    loss = call_loss(attn, calls, outputs, masks)
    err = lambda p: sum(float(loss(p, torch.Generator().manual_seed(s))) for s in range(4))
    trained = adam_refit(params, loss, steps=40, lr=0.1, seed=0)
    assert err(trained) < 0.8 * err(params)
    assert trained["q_proj.weight"].shape == (16, 32) and trained["o_proj.weight"].shape == (32, 16)
    again = adam_refit(params, loss, steps=40, lr=0.1, seed=0)
    assert all(torch.equal(trained[k], again[k]) for k in trained)


def test_adam_refit_steps_each_tensor_relative_to_its_rms():
    # loss = sum: Adam's first step is lr_eff * sign(grad) per weight, so each tensor moves by lr x its RMS
    params = {"small": torch.full((4, 3), 0.1), "large": torch.full((2, 5), -2.0), "zero": torch.zeros(3)}
    out = adam_refit(params, lambda p, gen: sum(t.sum() for t in p.values()), steps=1, lr=0.01, seed=0)
    torch.testing.assert_close(out["small"], torch.full((4, 3), 0.1 - 0.001))
    torch.testing.assert_close(out["large"], torch.full((2, 5), -2.0 - 0.02))
    assert torch.equal(out["zero"], torch.zeros(3))  # a zero tensor stays put


def test_fit_token_masks_draw_a_seeded_subset_of_the_non_padding_tokens():
    from types import SimpleNamespace

    gen = torch.Generator().manual_seed(0)
    batches = [SimpleNamespace(mask=torch.rand(3, 7, generator=gen) > 0.3) for _ in range(4)]
    total = sum(int(b.mask.sum()) for b in batches)
    assert fit_token_masks(batches, total, seed=5) == [b.mask for b in batches]  # all fit: every token
    masks = fit_token_masks(batches, 20, seed=5)
    assert sum(int(m.sum()) for m in masks) == 20
    for m, b in zip(masks, batches):
        assert m.shape == b.mask.shape and not (m & ~b.mask).any()  # padding is never drawn
    flat = torch.cat([b.mask.reshape(-1) for b in batches]).nonzero().squeeze(1)  # token order: batch, row-major
    drawn = torch.cat([m.reshape(-1) for m in masks]).nonzero().squeeze(1)
    expected = torch.randperm(total, generator=torch.Generator().manual_seed(5))[:20].sort().values
    assert torch.equal(drawn, flat[expected])
    assert all(torch.equal(a, b) for a, b in zip(masks, fit_token_masks(batches, 20, seed=5)))
    assert not all(torch.equal(a, b) for a, b in zip(masks, fit_token_masks(batches, 20, seed=6)))


def test_fit_batches_take_whole_batches_in_a_seeded_order_until_enough_tokens():
    from types import SimpleNamespace

    sizes = [5, 9, 2, 7, 4, 6]
    batches = [SimpleNamespace(mask=torch.arange(10) < n) for n in sizes]
    assert fit_batches(batches, sum(sizes), seed=1) == list(range(6))
    order = torch.randperm(6, generator=torch.Generator().manual_seed(1)).tolist()
    taken, total = [], 0
    while total < 12:
        taken.append(order[len(taken)])
        total += sizes[taken[-1]]
    assert fit_batches(batches, 12, seed=1) == sorted(taken)
    assert fit_batches(batches, 1, seed=1) == [order[0]]


def test_auto_adam_steps_are_eight_passes_within_bounds():
    from featprune_ext.structured import Options
    from featprune_ext.structured.options import AUTO_STEPS

    auto = Options()
    assert auto.adam_steps is None and AUTO_STEPS == (80, 160)
    assert auto.steps_for(5135) == 80  # 8 x 5135 / 1024 = 40: the floor
    assert auto.steps_for(12800) == 100  # 8 passes
    assert auto.steps_for(21893) == 160  # 171: the ceiling
    assert Options(adam_tokens=512).steps_for(8000) == 125
    assert Options(adam_steps=7).steps_for(21893) == 7
    with pytest.raises(InputError, match="adam_steps must be at least 1"):
        Options(adam_steps=0).check()
