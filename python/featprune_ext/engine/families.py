"""Where each model family keeps its transformer blocks and its prunable matrices.

The engine and the naive reference both go through here, so a new layout is added in
one place. Everything else about a family (attention masks, rotary or alibi position
encodings, per-layer differences) is captured generically at run time by the engine.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError

__all__ = ["BLOCK_LIST_PATHS", "ROUTER_NAMES", "PrunableLinear", "find_blocks", "is_router", "max_positions",
           "prunable_linears"]

# Attribute paths of the block list, most common first: Llama/Mistral/Qwen/Gemma (model.layers),
# GPT-2/mGPT/BLOOM (transformer.h), OPT/XGLM-style decoders (model.decoder.layers),
# GPT-NeoX (gpt_neox.layers), multimodal Gemma 3 wrappers (model.language_model.layers).
BLOCK_LIST_PATHS = (
    "model.layers",
    "transformer.h",
    "model.decoder.layers",
    "gpt_neox.layers",
    "model.language_model.layers",
    "language_model.model.layers",
    "transformer.layers",
    "transformer.blocks",
)

# Last name component of mixture-of-experts routers: Mixtral's block_sparse_moe.gate, Qwen-MoE's
# mlp.gate and mlp.shared_expert_gate, routers named "router". Never pruned unless --targets names them.
ROUTER_NAMES = frozenset({"gate", "router", "shared_expert_gate"})

_CONFIG_LENGTH_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


def _get_path(root: nn.Module, path: str):
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(attribute path, block list) of a causal LM; InputError naming the paths tried."""
    for path in BLOCK_LIST_PATHS:
        blocks = _get_path(model, path)
        if isinstance(blocks, nn.ModuleList) and len(blocks) > 0:
            return path, blocks
    raise InputError(
        f"unknown model layout {type(model).__name__}: no transformer block list at any of "
        f"{', '.join(BLOCK_LIST_PATHS)} (add the path to featprune_ext.families.BLOCK_LIST_PATHS)"
    )


def _conv1d_type():
    """transformers' Conv1D (GPT-2), if its module was imported: a block holding one was built by it,
    so a model from featprune's built-in code never imports transformers here."""
    conv1d = getattr(sys.modules.get("transformers.pytorch_utils"), "Conv1D", None)
    return (conv1d,) if conv1d is not None else ()


@dataclass(frozen=True)
class PrunableLinear:
    """A matrix to prune. `transposed`: stored as [in, out] (GPT-2 Conv1D)."""

    name: str  # module path inside the block, e.g. "self_attn.q_proj"
    module: nn.Module
    transposed: bool

    @property
    def param_name(self) -> str:
        return f"{self.name}.weight"

    def weight_rows(self) -> torch.Tensor:
        """The weight as [out, in] (rows = output features), a view of the parameter's data."""
        w = self.module.weight.data
        return w.t() if self.transposed else w

    @property
    def in_features(self) -> int:
        return self.module.weight.shape[0 if self.transposed else 1]


def prunable_linears(block: nn.Module) -> list[PrunableLinear]:
    """Every nn.Linear and Conv1D inside a block, in module order (as Wanda prunes them)."""
    conv1d = _conv1d_type()
    found = []
    for name, module in block.named_modules():
        if isinstance(module, nn.Linear):
            found.append(PrunableLinear(name, module, transposed=False))
        elif conv1d and isinstance(module, conv1d):
            found.append(PrunableLinear(name, module, transposed=True))
    return found


def is_router(name: str, module: nn.Module | None = None) -> bool:
    """True for an MoE router/gate matrix, by its module name (or a class named *Router)."""
    leaf = name.removesuffix(".weight").rsplit(".", 1)[-1]
    return leaf in ROUTER_NAMES or (module is not None and type(module).__name__.endswith("Router"))


def max_positions(config) -> int | None:
    """The longest sequence the model supports, or None (e.g. BLOOM's alibi has no table)."""
    text = getattr(config, "get_text_config", lambda: config)()
    for key in _CONFIG_LENGTH_KEYS:
        value = getattr(text, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
