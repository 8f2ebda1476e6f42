"""`--structured SPEC`: what to remove, as `mlp=F,heads=F,blocks=N,experts=F`, and its check against a model.

`parse_spec` checks the text alone; `validate(spec, config)` turns the fractions into counts for one
model and refuses what cannot be cut into a model stock transformers still loads: a fraction that leaves
no channel, group or expert (or fewer experts than each token is routed to), as many blocks as the model
has, experts on a dense model, heads on a family whose attention featprune cannot cut by key/value group.
Counts round half up; a fraction that rounds to nothing is refused too, naming the smallest that removes one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import InputError
from .layout import LAYOUTS, layout_for

__all__ = ["StructuredPlan", "StructuredSpec", "parse_spec", "validate"]

_KEYS = ("mlp", "heads", "blocks", "experts")
_BLOCK_FAMILIES = frozenset(LAYOUTS)  # blocks= renumbers keys and per-layer config lists of these


@dataclass(frozen=True)
class StructuredSpec:
    """Fractions of MLP channels, key/value groups and experts to remove per block; whole blocks to remove."""

    mlp: float = 0.0
    heads: float = 0.0
    blocks: int = 0
    experts: float = 0.0

    def __str__(self) -> str:
        parts = [f"{k}={getattr(self, k)}" for k in _KEYS if getattr(self, k)]
        return ",".join(parts) or "nothing"


@dataclass(frozen=True)
class StructuredPlan:
    """A spec made concrete for one model: counts removed in EVERY kept block (so the config stays standard)."""

    spec: StructuredSpec
    model_type: str
    num_blocks: int
    intermediate_size: int  # dense MLP channels per block (0: no dense MLP, e.g. Mixtral)
    num_heads: int
    num_kv_heads: int
    head_dim: int
    num_experts: int  # 0: dense model
    top_k: int
    mlp_remove: int
    kv_remove: int  # key/value groups removed (each takes num_heads // num_kv_heads query heads with it)
    blocks_remove: int
    experts_remove: int

    @property
    def heads_per_group(self) -> int:
        return self.num_heads // self.num_kv_heads

    def describe(self) -> dict:
        return {"spec": str(self.spec), "mlp_channels_removed_per_block": self.mlp_remove,
                "kv_groups_removed_per_block": self.kv_remove, "blocks_removed": self.blocks_remove,
                "experts_removed_per_block": self.experts_remove}


def _bad(text: str, why: str) -> InputError:
    return InputError(f"--structured {text!r}: {why} (expected a comma list of mlp=FRACTION, heads=FRACTION, "
                      "blocks=COUNT, experts=FRACTION)")


def parse_spec(text: str) -> StructuredSpec:
    """`mlp=0.25,blocks=2` -> StructuredSpec; InputError naming the bad item."""
    if not isinstance(text, str) or not text.strip():
        raise _bad(str(text), "empty")
    values: dict = {}
    for item in text.split(","):
        key, sep, raw = item.strip().partition("=")
        key = key.strip().lower()
        if not sep or not raw.strip():
            raise _bad(text, f"{item.strip()!r} is not KEY=VALUE")
        if key not in _KEYS:
            raise _bad(text, f"unknown key {key!r}")
        if key in values:
            raise _bad(text, f"{key} is given twice")
        raw = raw.strip()
        if key == "blocks":
            try:
                count = int(raw)
            except ValueError:
                raise _bad(text, f"blocks must be a whole number of blocks, got {raw!r}") from None
            if count < 0:
                raise _bad(text, f"blocks must be >= 0, got {count}")
            values[key] = count
        else:
            try:
                frac = float(raw)
            except ValueError:
                raise _bad(text, f"{key} must be a fraction, got {raw!r}") from None
            if not math.isfinite(frac) or not 0.0 <= frac < 1.0:
                raise _bad(text, f"{key} must be a fraction in [0, 1), got {raw}")
            values[key] = frac
    spec = StructuredSpec(**values)
    if not any(getattr(spec, k) for k in _KEYS):
        raise _bad(text, "removes nothing")
    return spec


def _count(fraction: float, total: int) -> int:
    return int(math.floor(fraction * total + 0.5))  # round half up: 0.25 of 2 groups is 1, not banker's 0


def _removal(spec_text: str, key: str, fraction: float, total: int, what: str, keep_at_least: int = 1) -> int:
    if not fraction:
        return 0
    if total <= keep_at_least:  # e.g. Gemma 3 270M's single key/value group: no fraction can apply
        raise InputError(f"--structured {spec_text}: each block has {total} {what} and at least {keep_at_least} "
                         f"must stay, so {key}= cannot remove any")
    n = _count(fraction, total)
    if n == 0:
        raise InputError(f"--structured {spec_text}: {key}={fraction} of {total} {what} removes none; "
                         f"the smallest fraction that removes one is {0.5 / total:.4g}")
    if total - n < keep_at_least:
        raise InputError(f"--structured {spec_text}: {key}={fraction} removes {n} of the {total} {what} of each "
                         f"block and leaves {total - n}; at least {keep_at_least} must stay")
    return n


def _get(config, *names, default=None):
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


def validate(spec: StructuredSpec, config) -> StructuredPlan:
    """The counts `spec` removes from the model of `config` (a transformers config of the text model)."""
    config = getattr(config, "get_text_config", lambda: config)()
    model_type = getattr(config, "model_type", type(config).__name__)
    text = str(spec)
    layers = _get(config, "num_hidden_layers", "n_layer", "num_layers")
    if not isinstance(layers, int) or layers < 1:
        raise InputError(f"--structured: the config of {model_type!r} gives no number of layers")
    layout = layout_for(model_type) if (spec.mlp or spec.heads or spec.experts) else None
    if spec.blocks and model_type not in _BLOCK_FAMILIES:
        raise InputError(f"--structured blocks= is not supported for {model_type!r} (supported: "
                         f"{', '.join(sorted(_BLOCK_FAMILIES))})")
    if spec.blocks >= layers:
        raise InputError(f"--structured {text}: blocks={spec.blocks} but the model has {layers} blocks; "
                         "at least one must stay")

    num_experts = int(_get(config, "num_local_experts", "num_experts", default=0) or 0)
    top_k = int(_get(config, "num_experts_per_tok", default=0) or 0)
    inter = int(_get(config, "intermediate_size", default=0) or 0) if num_experts == 0 else 0
    heads = int(_get(config, "num_attention_heads", default=0) or 0)
    kv = int(_get(config, "num_key_value_heads", default=heads) or heads)
    hidden = int(_get(config, "hidden_size", default=0) or 0)
    head_dim = int(_get(config, "head_dim", default=0) or (hidden // heads if heads else 0))

    if spec.mlp:
        if num_experts:
            raise InputError(f"--structured {text}: mlp= cuts dense MLPs, and every block of this {model_type!r} "
                             "model is a mixture of experts: use experts=")
        mlp_remove = _removal(text, "mlp", spec.mlp, inter, "MLP channels")
    else:
        mlp_remove = 0
    if spec.heads:
        if layout is None or not layout.attention or not heads or heads % kv:
            raise InputError(f"--structured {text}: heads= needs grouped key/value heads, which {model_type!r} "
                             "does not describe (supported: Llama, Mistral, Qwen2, Gemma 3, Mixtral, Qwen-MoE)")
        kv_remove = _removal(text, "heads", spec.heads, kv, "key/value groups")
    else:
        kv_remove = 0
    if spec.experts:
        if num_experts == 0:
            raise InputError(f"--structured {text}: experts= needs a mixture-of-experts model; {model_type!r} "
                             "is dense")
        experts_remove = _removal(text, "experts", spec.experts, num_experts, "experts", keep_at_least=max(top_k, 1))
    else:
        experts_remove = 0
    return StructuredPlan(spec=spec, model_type=model_type, num_blocks=layers, intermediate_size=inter,
                          num_heads=heads, num_kv_heads=kv, head_dim=head_dim, num_experts=num_experts, top_k=top_k,
                          mlp_remove=mlp_remove, kv_remove=kv_remove, blocks_remove=spec.blocks,
                          experts_remove=experts_remove)

