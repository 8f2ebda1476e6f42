"""families.py and the engine's generic capture of per-layer block arguments."""

import pytest
import torch
from tiny_models import FAMILIES, MOE_FAMILIES, TEXTS
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer

from featprune_ext.data.calibration_set import CalibrationSet
from featprune_ext.engine import ModelSkeleton, capture_block_calls, make_batches
from featprune_ext.engine.checkpoint import Checkpoint
from featprune_ext.engine.families import BLOCK_LIST_PATHS, find_blocks, max_positions, prunable_linears
from featprune_ext.errors import InputError

EXPECTED_LINEARS = {"llama": 7, "gemma3": 7, "qwen2": 7, "mistral": 7, "gpt2": 4, "bloom": 4, "xglm": 6,
                    "opt": 6, "gpt_neox": 4,
                    # MoE: attention + 5 experts x (gate, up, down), unfused per expert (engine/moe.py);
                    # Qwen2-MoE adds a shared expert (3) and its gate (a router, not pruned by default)
                    "mixtral": 19, "qwen2_moe": 23, "qwen3_moe": 19}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_blocks_and_linears_of_every_family(tiny_model, family):
    skel = ModelSkeleton(Checkpoint(tiny_model(family)))
    assert skel.num_blocks == len(skel.blocks) >= 3
    linears = prunable_linears(skel.blocks[0])
    assert len(linears) == EXPECTED_LINEARS[family]
    for pl in linears:
        w = pl.module.weight
        assert pl.weight_rows().shape == ((w.shape[1], w.shape[0]) if pl.transposed else tuple(w.shape))
    assert all(pl.transposed for pl in linears) == (family == "gpt2")  # Conv1D stores [in, out]
    # every block's tensors are found under one checkpoint prefix, nothing is left unowned by accident
    assert all(keys for keys in skel.block_keys)
    assert not any(".0." in k for k in skel.other_keys if skel.blocks_path in k)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_names_shortcut_agrees_with_transformers_renaming(tiny_model, family, monkeypatch):
    """Checkpoints saved under the module tree's own names skip transformers' conversion table;
    the names must be the ones its renaming rules give, whichever path was taken."""
    renamed = []
    original = ModelSkeleton._renamed_names

    def spy(self):
        renamed.append(family)
        return original(self)

    monkeypatch.setattr(ModelSkeleton, "_renamed_names", spy)
    fast = ModelSkeleton(Checkpoint(tiny_model(family)))
    monkeypatch.setattr(ModelSkeleton, "_checkpoint_names", spy)  # transformers' rules, always
    slow = ModelSkeleton(Checkpoint(tiny_model(family)))
    assert fast._names == slow._names
    if family in (*MOE_FAMILIES, "gpt_neox"):  # experts saved one by one, GPT-NeoX's embed_out
        assert renamed == [family, family]
    else:  # saved under the module tree's names: the shortcut
        assert renamed == [family] and all(name == ckey for name, ckey in fast._names.items())


def test_unknown_layout_names_the_paths_tried():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.stack = nn.ModuleList([nn.Linear(2, 2)])

    with pytest.raises(InputError) as exc:
        find_blocks(Odd())
    for path in BLOCK_LIST_PATHS[:4]:
        assert path in str(exc.value)


def test_max_positions():
    class C:
        n_positions = 1024

    class Alibi:
        pass

    assert max_positions(C()) == 1024
    assert max_positions(Alibi()) is None


def _captured(model_dir, batch_size=2, seqlen=24):
    tok = AutoTokenizer.from_pretrained(model_dir)
    calib = CalibrationSet.from_texts(TEXTS, tok, 4, seqlen, 0)
    skel = ModelSkeleton(Checkpoint(model_dir))
    batches = make_batches(calib, batch_size, 0)
    skel.load_pre_block(torch.cat([b.ids.reshape(-1) for b in batches]), torch.device("cpu"), torch.float32)
    with torch.no_grad():
        calls, firsts = capture_block_calls(skel.model, skel.blocks, batches, "cpu")
    return skel, batches, calls, firsts


def _reference_calls(model_dir, batches):
    """What each layer of the full model is really called with (forward pre-hooks)."""
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    _, layers = find_blocks(model)
    seen = [[] for _ in layers]
    hooks = [layer.register_forward_pre_hook(lambda m, a, k, i=i: seen[i].append((a, k)), with_kwargs=True)
             for i, layer in enumerate(layers)]
    with torch.no_grad():
        for b in batches:
            model(input_ids=b.ids, attention_mask=b.mask.long(), use_cache=False)
    for h in hooks:
        h.remove()
    return model, seen


def test_gemma3_global_layer_gets_global_rotary_and_mask(tiny_model):
    model_dir = tiny_model("gemma3")
    skel, batches, calls, firsts = _captured(model_dir, seqlen=24)
    types = skel.config.layer_types
    assert types[0] == "sliding_attention" and types[1] == "full_attention"
    model, seen = _reference_calls(model_dir, batches)
    hidden = firsts[0]
    pos = torch.arange(hidden.shape[1])[None]
    glob_cos, glob_sin = model.model.rotary_emb(hidden, pos, "full_attention")
    loc_cos, _ = model.model.rotary_emb(hidden, pos, "sliding_attention")
    assert not torch.allclose(glob_cos, loc_cos)  # the two rope thetas differ, so the test can tell
    for i, layer_type in enumerate(types):
        cos, sin = calls[i][0].kwargs["position_embeddings"]
        want = (glob_cos, glob_sin) if layer_type == "full_attention" else model.model.rotary_emb(hidden, pos,
                                                                                                 layer_type)
        assert torch.equal(cos, want[0]) and torch.equal(sin, want[1]), f"layer {i} ({layer_type})"
        for b in range(len(batches)):  # and exactly what the full model passes each layer
            ref_kwargs = seen[i][b][1]
            got = calls[i][b].kwargs
            assert torch.equal(got["position_embeddings"][0], ref_kwargs["position_embeddings"][0])
            ref_mask, got_mask = ref_kwargs["attention_mask"], got["attention_mask"]
            assert (ref_mask is None) == (got_mask is None)
            if ref_mask is not None:
                assert torch.equal(ref_mask, got_mask)
    # with 24 tokens and a sliding window of 4 the masks must differ between the layer types
    # (sdpa may express an unpadded full-causal mask as None)
    m_sliding, m_full = calls[0][0].kwargs["attention_mask"], calls[1][0].kwargs["attention_mask"]
    assert m_sliding is not None and (m_full is None or not torch.equal(m_sliding, m_full))


@pytest.mark.parametrize("family", ["bloom", "gpt2", "opt"])
def test_capture_matches_real_forward(tiny_model, family):
    """Positional extras (GPT-2), alibi (BLOOM, whose blocks return tuples) and OPT positions."""
    model_dir = tiny_model(family)
    skel, batches, calls, firsts = _captured(model_dir)
    model, seen = _reference_calls(model_dir, batches)
    for i in range(skel.num_blocks):
        for b in range(len(batches)):
            ref_args, ref_kwargs = seen[i][b]
            got = calls[i][b]
            assert len(got.args) == len(ref_args) - 1
            assert set(got.kwargs) == set(ref_kwargs)
            for key, value in ref_kwargs.items():
                if isinstance(value, torch.Tensor):
                    assert torch.equal(value, got.kwargs[key]), (i, key)
    ref_first = seen[0][0][0][0] if seen[0][0][0] else seen[0][0][1]["hidden_states"]
    assert torch.equal(firsts[0], ref_first)
    if family == "bloom":
        assert "alibi" in calls[1][0].kwargs
