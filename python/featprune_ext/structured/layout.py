"""Which tensors of a block structured pruning cuts, per family, in the checkpoint's layout.

Block-relative checkpoint keys (`mlp.down_proj.weight`), as the streaming engine reads a block. The
families share the Llama names for attention and the dense MLP; mixture-of-experts blocks are found
from the keys themselves (`<moe>.experts.<e>.<leaf>.weight`, the Hub layout engine/moe.py works in),
with the router recognised by engine/families.py's `is_router`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..engine.families import is_router
from ..errors import InputError

__all__ = ["LAYOUTS", "Layout", "MoeKeys", "layout_for", "moe_keys"]


@dataclass(frozen=True)
class Layout:
    """Module paths inside a block. `attention`: (q, k, v, o); `mlp`: (gate, up, down) or None (MoE only);
    `mlp_input_norm`: the norm in front of the MLP, whose input is the residual stream the MLP's output is
    added to; `mlp_output_norm`: a norm applied to the MLP's output before the residual add (Gemma 3), or None."""

    attention: tuple[str, str, str, str] | None
    mlp: tuple[str, str, str] | None
    mlp_input_norm: str | None = None
    mlp_output_norm: str | None = None


_LLAMA_ATTENTION = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
_LLAMA_MLP = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")

# Gemma 3's q_norm/k_norm act per head_dim: removing whole heads leaves them unchanged. Qwen2's
# q/k/v biases are cut with their rows (cut_attention handles any bias present).
LAYOUTS: dict[str, Layout] = {
    "llama": Layout(_LLAMA_ATTENTION, _LLAMA_MLP, "post_attention_layernorm"),
    "mistral": Layout(_LLAMA_ATTENTION, _LLAMA_MLP, "post_attention_layernorm"),
    "qwen2": Layout(_LLAMA_ATTENTION, _LLAMA_MLP, "post_attention_layernorm"),
    "gemma3_text": Layout(_LLAMA_ATTENTION, _LLAMA_MLP, "pre_feedforward_layernorm", "post_feedforward_layernorm"),
    "gemma3": Layout(_LLAMA_ATTENTION, _LLAMA_MLP, "pre_feedforward_layernorm", "post_feedforward_layernorm"),
    "mixtral": Layout(_LLAMA_ATTENTION, None),
    "qwen2_moe": Layout(_LLAMA_ATTENTION, None),
    "qwen3_moe": Layout(_LLAMA_ATTENTION, None),
}


def layout_for(model_type: str) -> Layout:
    """The family's layout; InputError listing the supported families."""
    try:
        return LAYOUTS[model_type]
    except KeyError:
        raise InputError(f"structured pruning does not know the layout of {model_type!r} models (supported: "
                         f"{', '.join(sorted(LAYOUTS))})") from None


_EXPERT_KEY = re.compile(r"^(?P<moe>.+)\.experts\.(?P<e>\d+)\.(?P<leaf>[A-Za-z_]\w*)\.weight$")


@dataclass(frozen=True)
class MoeKeys:
    """One MoE block's experts in checkpoint keys: `experts[e][leaf]` is the key of expert e's matrix."""

    moe: str  # e.g. "block_sparse_moe" (Mixtral) or "mlp" (Qwen-MoE)
    router: str  # the router's weight key, e.g. "mlp.gate.weight"
    experts: dict[int, dict[str, str]]

    @property
    def num_experts(self) -> int:
        return len(self.experts)


def moe_keys(keys) -> MoeKeys | None:
    """The experts and router among a block's keys, or None for a dense block."""
    experts: dict[int, dict[str, str]] = {}
    moe = None
    for key in keys:
        m = _EXPERT_KEY.match(key)
        if m is None:
            continue
        if moe is not None and m.group("moe") != moe:
            raise InputError(f"two expert containers in one block: {moe!r} and {m.group('moe')!r}")
        moe = m.group("moe")
        experts.setdefault(int(m.group("e")), {})[m.group("leaf")] = key
    if moe is None:
        return None
    if sorted(experts) != list(range(len(experts))):
        raise InputError(f"the experts under {moe!r} are not numbered 0..{len(experts) - 1}: {sorted(experts)[:8]}")
    depth = moe.count(".") + 2  # "<moe>.gate.weight": the router directly under the MoE module
    routers = [k for k in keys if k.startswith(moe + ".") and k.endswith(".weight") and k.count(".") == depth
               and is_router(k) and not k.endswith("shared_expert_gate.weight")]
    if len(routers) != 1:
        raise InputError(f"expected one router matrix under {moe!r}, found {routers}")
    return MoeKeys(moe, routers[0], experts)
