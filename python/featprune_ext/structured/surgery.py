"""Cutting one block's tensors, dropping whole blocks, and rewriting config.json to match.

Tensors are a dict of block-relative checkpoint keys (`self_attn.q_proj.weight`), as the streaming
engine holds one block; every function returns a new dict and never changes its input's tensors.
- MLP channels: gate/up rows (and biases), down columns.
- Key/value groups: k/v rows of the group, q rows of the query heads that share it, biases with their
  rows (Qwen2), o_proj columns of those heads. Per-head-dim norms (Gemma 3's q_norm/k_norm) stay.
- Experts: a removed expert's matrices go, the kept ones are renumbered in order, the router loses
  their rows.
- Blocks: the kept blocks are renumbered in order; per-layer config lists are filtered the same way.
"""

from __future__ import annotations

import copy

import torch

from ..errors import InputError
from .layout import Layout, MoeKeys

__all__ = ["block_renumbering", "cut_attention", "cut_experts", "cut_mlp", "renumber_block_key",
           "rewrite_config", "head_rows"]


def _index(keep) -> torch.Tensor:
    keep = torch.as_tensor(keep, dtype=torch.int64)
    if keep.dim() != 1 or keep.numel() == 0:
        raise ValueError("keep must be a non-empty 1-D list of indices")
    if keep.numel() > 1 and not bool((keep[1:] > keep[:-1]).all()):
        raise ValueError("keep must be strictly ascending")
    return keep


def _rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return t.index_select(0, idx.to(t.device)).contiguous()


def _cols(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return t.index_select(1, idx.to(t.device)).contiguous()


def _need(tensors: dict, key: str) -> torch.Tensor:
    if key not in tensors:
        raise InputError(f"structured pruning expected the tensor {key!r} in the block; it has "
                         f"{', '.join(sorted(tensors)[:12])}")
    return tensors[key]


def cut_mlp(tensors: dict, layout: Layout, keep) -> dict:
    """Keep the MLP channels `keep` (ascending): gate/up output rows, down input columns."""
    if layout.mlp is None:
        raise InputError("this family has no dense MLP to cut channels from")
    idx = _index(keep)
    gate, up, down = layout.mlp
    out = dict(tensors)
    for name in (gate, up):
        out[f"{name}.weight"] = _rows(_need(tensors, f"{name}.weight"), idx)
        if f"{name}.bias" in tensors:
            out[f"{name}.bias"] = _rows(tensors[f"{name}.bias"], idx)
    out[f"{down}.weight"] = _cols(_need(tensors, f"{down}.weight"), idx)
    return out


def head_rows(groups, heads_per_group: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(q/o feature indices, k/v feature indices) of the kept key/value `groups`, ascending."""
    groups = _index(groups)
    q = [(g * heads_per_group + h) * head_dim + d for g in groups.tolist() for h in range(heads_per_group)
         for d in range(head_dim)]
    kv = [g * head_dim + d for g in groups.tolist() for d in range(head_dim)]
    return torch.tensor(q, dtype=torch.int64), torch.tensor(kv, dtype=torch.int64)


def cut_attention(tensors: dict, layout: Layout, keep_groups, heads_per_group: int, head_dim: int) -> dict:
    """Keep the key/value groups `keep_groups` (ascending) with the query heads that share them."""
    if layout.attention is None:
        raise InputError("this family has no grouped attention to cut")
    q_idx, kv_idx = head_rows(keep_groups, heads_per_group, head_dim)
    q, k, v, o = layout.attention
    out = dict(tensors)
    for name, idx in ((q, q_idx), (k, kv_idx), (v, kv_idx)):
        w = _need(tensors, f"{name}.weight")
        if int(idx.max()) >= w.shape[0]:
            raise InputError(f"{name}.weight has {w.shape[0]} rows, fewer than the heads the config describes")
        out[f"{name}.weight"] = _rows(w, idx)
        if f"{name}.bias" in tensors:
            out[f"{name}.bias"] = _rows(tensors[f"{name}.bias"], idx)
    out[f"{o}.weight"] = _cols(_need(tensors, f"{o}.weight"), q_idx)
    return out


def cut_experts(tensors: dict, moe: MoeKeys, keep) -> dict:
    """Keep the experts `keep` (ascending), renumbered 0..len(keep)-1, and their router rows."""
    idx = _index(keep)
    if int(idx.max()) >= moe.num_experts:
        raise ValueError(f"expert {int(idx.max())} out of {moe.num_experts}")
    dropped = {key for leaves in moe.experts.values() for key in leaves.values()}
    out = {k: v for k, v in tensors.items() if k not in dropped}
    for new, old in enumerate(idx.tolist()):
        for leaf, key in moe.experts[old].items():
            out[f"{moe.moe}.experts.{new}.{leaf}.weight"] = tensors[key]
    out[moe.router] = _rows(_need(tensors, moe.router), idx)
    bias = moe.router.removesuffix(".weight") + ".bias"
    if bias in tensors:
        out[bias] = _rows(tensors[bias], idx)
    return out


def block_renumbering(num_blocks: int, dropped) -> dict[int, int]:
    """{old block index: new index} of the kept blocks."""
    dropped = set(dropped)
    if any(not 0 <= d < num_blocks for d in dropped) or len(dropped) >= num_blocks:
        raise ValueError(f"cannot drop blocks {sorted(dropped)} of {num_blocks}")
    kept = [i for i in range(num_blocks) if i not in dropped]
    return {old: new for new, old in enumerate(kept)}


def renumber_block_key(key: str, block_prefix: str, old: int, new: int) -> str:
    """`model.layers.7.mlp...` -> `model.layers.5.mlp...` (block_prefix: `model.layers.`)."""
    head = f"{block_prefix}{old}."
    if not key.startswith(head):
        raise ValueError(f"{key!r} is not a key of block {old} under {block_prefix!r}")
    return f"{block_prefix}{new}.{key[len(head):]}"


# config.json keys holding a count of experts, and the per-block list of layer indices Qwen-MoE keeps dense
_EXPERT_COUNT_KEYS = ("num_local_experts", "num_experts")
_LAYER_INDEX_LISTS = ("mlp_only_layers",)
_LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


def _rewrite_text_config(cfg: dict, plan, renumber: dict[int, int] | None, layer_types: list | None) -> dict:
    layers = next((cfg[k] for k in _LAYER_COUNT_KEYS if k in cfg), None)
    if plan.mlp_remove:
        cfg["intermediate_size"] = plan.intermediate_size - plan.mlp_remove
    if plan.kv_remove:
        kept_kv = plan.num_kv_heads - plan.kv_remove
        cfg["num_attention_heads"] = kept_kv * plan.heads_per_group
        cfg["num_key_value_heads"] = kept_kv
        cfg["head_dim"] = plan.head_dim  # hidden / heads no longer gives it
    if plan.experts_remove:
        key = next((k for k in _EXPERT_COUNT_KEYS if k in cfg), None)
        if key is None:
            raise InputError("config.json names no expert count (num_local_experts / num_experts)")
        cfg[key] = cfg[key] - plan.experts_remove
        if cfg.get("num_experts_per_tok", 0) > cfg[key]:
            raise InputError(f"{cfg[key]} experts left, fewer than num_experts_per_tok={cfg['num_experts_per_tok']}")
    if renumber is not None and len(renumber) != layers:
        kept = sorted(renumber)
        if layer_types is not None and "layer_types" not in cfg:
            cfg["layer_types"] = list(layer_types)  # derived by transformers from a pattern: write it explicitly
        for key, value in list(cfg.items()):
            if isinstance(value, list) and len(value) == layers and key not in _LAYER_INDEX_LISTS:
                cfg[key] = [value[i] for i in kept]  # per-layer lists: layer_types, ...
        for key in _LAYER_INDEX_LISTS:
            if cfg.get(key):
                cfg[key] = [renumber[i] for i in cfg[key] if i in renumber]
        if isinstance(cfg.get("max_window_layers"), int):  # Qwen2: layers below it use full attention
            cfg["max_window_layers"] = sum(1 for i in kept if i < cfg["max_window_layers"])
        for key in _LAYER_COUNT_KEYS:
            if key in cfg:
                cfg[key] = len(kept)
    return cfg


def rewrite_config(config: dict, plan, dropped_blocks=(), layer_types: list | None = None) -> dict:
    """A copy of config.json (a dict) describing the cut model. `layer_types`: the per-layer attention
    types transformers derived for the dense model, written explicitly when blocks go and the file had
    none. A multimodal wrapper's `text_config` is rewritten in place of the top level."""
    out = copy.deepcopy(config)
    target = out["text_config"] if isinstance(out.get("text_config"), dict) else out
    renumber = block_renumbering(plan.num_blocks, dropped_blocks) if dropped_blocks else None
    _rewrite_text_config(target, plan, renumber, layer_types)
    return out

