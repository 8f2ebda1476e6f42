"""Mixture-of-experts models (engine/moe.py): Mixtral, Qwen2-MoE, Qwen3-MoE, tiny and random.

Experts are pruned one matrix per expert, from statistics of the tokens routed to them; an expert
no token reached falls back to magnitude; routers are never pruned by default."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import MOE_FAMILIES, TEXTS, build_tiny_model, edit_tensor
from transformers import AutoModelForCausalLM, AutoTokenizer

from featprune_ext import reference
from featprune_ext.data.calibration_set import CalibrationSet
from featprune_ext.engine import ModelSkeleton, prune_model
from featprune_ext.engine.checkpoint import Checkpoint
from featprune_ext.engine.moe import UnfusedExperts
from featprune_ext.engine.select import Selection
from featprune_ext.errors import InputError
from featprune_ext.methods import Wanda

NUM_EXPERTS, TOP_K, LAYERS = 5, 2, 3
# checkpoint names: (MoE module, router, gate, up, down) per family
LAYOUT = {"mixtral": ("block_sparse_moe", "block_sparse_moe.gate", "w1", "w3", "w2"),
          "qwen2_moe": ("mlp", "mlp.gate", "gate_proj", "up_proj", "down_proj"),
          "qwen3_moe": ("mlp", "mlp.gate", "gate_proj", "up_proj", "down_proj")}


def calibration(model_dir, nsamples=8, seqlen=24):
    return CalibrationSet.from_texts(TEXTS, AutoTokenizer.from_pretrained(model_dir), nsamples, seqlen, 0)


def load_dir(path) -> dict:
    sd = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        sd.update(load_file(str(f)))
    return sd


def expert_key(family, layer, expert, which) -> str:
    moe, _, gate, up, down = LAYOUT[family]
    leaf = {"gate": gate, "up": up, "down": down}[which]
    return f"model.layers.{layer}.{moe}.experts.{expert}.{leaf}.weight"


def router_keys(family, layer) -> list[str]:
    keys = [f"model.layers.{layer}.{LAYOUT[family][1]}.weight"]
    if family == "qwen2_moe":
        keys.append(f"model.layers.{layer}.mlp.shared_expert_gate.weight")
    return keys


class Recording(Wanda):
    """Wanda that keeps the RMS and token count each matrix was scored with."""

    def __init__(self):
        super().__init__()
        self.seen: dict[str, tuple[torch.Tensor, int]] = {}

    def prune_(self, weight, stats, **kw):
        self.seen[kw["name"]] = (stats.rms().clone(), int(stats.count.sum()))
        return super().prune_(weight, stats, **kw)


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_moe_prunes_loads_and_generates(tiny_model, tmp_path, family):
    src = tiny_model(family)
    skel = ModelSkeleton(Checkpoint(src))
    assert isinstance(skel.blocks[0].get_submodule("mlp.experts"), UnfusedExperts)
    out = tmp_path / "out"
    report = prune_model(src, out, calibration=calibration(src), method=Wanda(), sparsity=0.5, batch_size=3,
                         progress=False)
    sd_in, sd_out = load_dir(src), load_dir(out)
    assert set(sd_in) == set(sd_out)  # written back in the checkpoint's per-expert layout
    layer_tokens = report["calibration"]["tokens"]
    for i in range(LAYERS):
        for key in router_keys(family, i):
            assert torch.equal(sd_out[key], sd_in[key]), key  # routers untouched
        routed = 0
        for e in range(NUM_EXPERTS):
            for which in ("gate", "up", "down"):
                key = expert_key(family, i, e, which)
                w = sd_out[key]
                assert ((w == 0).sum(dim=1) == w.shape[1] // 2).all(), key
            info = report["layers"][i]["matrices"][expert_key(family, i, e, "gate")]
            routed += info["calibration_tokens"]
        assert routed == TOP_K * layer_tokens  # every token went to exactly top-k experts
    if family == "qwen2_moe":
        assert report["selection"]["skipped_by_reason"] == {"router": LAYERS}
        assert report["layers"][0]["skipped"] == ["model.layers.0.mlp.shared_expert_gate"]
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        generated = model.generate(torch.tensor([[1, 5, 9, 17]]), max_new_tokens=4, do_sample=False)
    assert generated.shape == (1, 8)


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_per_expert_statistics_equal_an_independent_computation(tiny_model, tmp_path, family):
    """The dense model in memory (transformers' fused experts), its own router choosing each token's
    experts: RMS of the inputs of gate/up and of down over exactly the routed tokens, per expert.
    Sparsity 0 keeps every block dense, so all layers compare; batches of 3 pad every batch."""
    src = tiny_model(family)
    calib = calibration(src)
    method = Recording()
    prune_model(src, tmp_path / "o", calibration=calib, method=method, sparsity=0.0, batch_size=3, progress=False)

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    inputs: dict[int, list[torch.Tensor]] = {i: [] for i in range(LAYERS)}
    hooks = [model.model.layers[i].mlp.register_forward_pre_hook(
        lambda mod, args, i=i: inputs[i].append(args[0].reshape(-1, args[0].shape[-1]))) for i in range(LAYERS)]
    with torch.no_grad():
        for ids in calib.samples:  # one sample at a time: no padding at all
            model(ids[None])
    for h in hooks:
        h.remove()
    checked = 0
    for i in range(LAYERS):
        moe = model.model.layers[i].mlp
        h = torch.cat(inputs[i]).double()
        with torch.no_grad():
            _, _, top_k_index = moe.gate(h.float())
        experts = moe.experts
        for e in range(NUM_EXPERTS):
            tok = (top_k_index == e).any(dim=-1).nonzero().flatten()
            x = h[tok]
            gate_up = x @ experts.gate_up_proj[e].double().t()
            g, u = gate_up.chunk(2, dim=-1)
            inter = torch.nn.functional.silu(g) * u
            for which, feats in (("gate", x), ("up", x), ("down", inter)):
                rms, count = method.seen[expert_key(family, i, e, which)]
                assert count == len(tok)
                want = feats.pow(2).mean(dim=0).sqrt()
                torch.testing.assert_close(rms.double(), want, rtol=2e-4, atol=1e-6)
                checked += 1
    assert checked == LAYERS * NUM_EXPERTS * 3


def _starve_last_expert(model_dir: Path, family: str) -> None:
    """Router rows a, -a, b, -b, 0: every token has a positive logit in each of the two pairs, so
    top-2 never picks expert 4 (logit 0)."""
    def rows(w, seed):
        a, b = torch.randn(2, w.shape[1], generator=torch.Generator().manual_seed(seed))
        return torch.stack([a, -a, b, -b, torch.zeros_like(a)])

    for i in range(LAYERS):
        edit_tensor(model_dir, router_keys(family, i)[0], lambda w, i=i: rows(w, i))


@pytest.mark.parametrize("family", ["mixtral", "qwen3_moe"])
def test_an_expert_without_tokens_falls_back_to_magnitude(tiny_model, tmp_path, family):
    src = tmp_path / "model"
    shutil.copytree(tiny_model(family), src)
    _starve_last_expert(src, family)
    with pytest.warns(RuntimeWarning, match="no calibration token"):
        report = prune_model(src, tmp_path / "o", calibration=calibration(src), method=Wanda(), sparsity=0.5,
                             progress=False)
    saved = json.loads((tmp_path / "o" / "featprune.json").read_text())
    sd_in, sd_out = load_dir(src), load_dir(tmp_path / "o")
    for i in range(LAYERS):
        matrices = saved["layers"][i]["matrices"]
        for which in ("gate", "up", "down"):
            key = expert_key(family, i, NUM_EXPERTS - 1, which)
            assert matrices[key]["calibration_tokens"] == 0 and matrices[key]["fallback"] == "magnitude"
            ones = torch.ones(sd_in[key].shape[1])
            assert torch.equal(sd_out[key] == 0, reference.prune_mask(sd_in[key], ones, sparsity=0.5)), key
            used = expert_key(family, i, 0, which)
            assert matrices[used]["calibration_tokens"] > 0 and "fallback" not in matrices[used]
    assert report["layers"] == saved["layers"]


def test_ignore_and_class_patterns_on_experts(tiny_model, tmp_path):
    src = tiny_model("mixtral")
    report = prune_model(src, tmp_path / "o", calibration=calibration(src), method=Wanda(), sparsity=0.5,
                         progress=False, select=Selection.of(ignore=["MixtralExperts", r".*experts\.0\..*"]))
    sd_in, sd_out = load_dir(src), load_dir(tmp_path / "o")
    for e in range(NUM_EXPERTS):
        assert torch.equal(sd_out[expert_key("mixtral", 1, e, "down")], sd_in[expert_key("mixtral", 1, e, "down")])
    assert len(report["skipped"]) == LAYERS * NUM_EXPERTS * 3
    assert report["selection"]["skipped_by_reason"] == {"ignored": LAYERS * NUM_EXPERTS * 3}
    assert not (sd_out["model.layers.0.self_attn.q_proj.weight"] != 0).all()  # attention still pruned


def test_router_pruned_only_when_targeted(tiny_model, tmp_path):
    src = tiny_model("qwen2_moe")
    report = prune_model(src, tmp_path / "o", calibration=calibration(src), method=Wanda(), sparsity=0.5,
                         progress=False, select=Selection.of(targets=".*shared_expert.*"))
    assert report["skipped"] and all("shared_expert" not in n for n in report["skipped"])
    assert "model.layers.0.mlp.shared_expert_gate.weight" in report["layers"][0]["matrices"]


def test_fused_expert_checkpoints_are_refused(tmp_path, tiny_tokenizer_dir):
    src = build_tiny_model("qwen3_moe", tmp_path / "m", tokenizer_dir=tiny_tokenizer_dir)
    model = AutoModelForCausalLM.from_pretrained(src)
    (src / "model.safetensors").unlink()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(src / "model.safetensors"),
              metadata={"format": "pt"})  # the in-memory layout: experts.gate_up_proj [E, 2I, H]
    with pytest.raises(InputError, match="fused in one 3-D tensor"):
        ModelSkeleton(Checkpoint(src))
