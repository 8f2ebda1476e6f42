"""Mixture-of-experts blocks: one matrix per expert, statistics from routed tokens only.

transformers 5 holds the experts of Mixtral, Qwen2-MoE, Qwen3-MoE (and of the families that share
their conversion rules: OLMoE, DeepSeek, GLM-MoE, ...) as two fused 3-D parameters,
`experts.gate_up_proj` [E, 2I, H] and `experts.down_proj` [E, H, I]. Their checkpoints, on the Hub
and as `save_pretrained` writes them, store one 2-D matrix per expert and projection
(`block_sparse_moe.experts.3.w1.weight`, `mlp.experts.3.gate_proj.weight`); a WeightConverter
stacks them on load. featprune works in the checkpoint's layout: the skeleton replaces each fused
experts module whose tensors are stored per expert by `UnfusedExperts`, which holds one
`ExpertLinear` per checkpoint matrix (named after the converter's source patterns) and computes
what the fused module's eager forward computes. So every expert matrix is an ordinary prunable
linear with its own statistics and its own checkpoint key, written back in the input's layout.

Routing: `UnfusedExperts` runs each expert on the tokens the model's own router sent to it, so the
statistics hooks see exactly those tokens (count-normalised per expert: RMS over the expert's own
tokens). An expert that no calibration token reached has no statistics: `prune_matrix` prunes it by
magnitude and reports `"calibration_tokens": 0, "fallback": "magnitude"`.

Checkpoints that store fused 3-D expert tensors are refused with an InputError (nothing featprune
knows writes them; the fused tensors would otherwise be left dense without a word).
"""

from __future__ import annotations

import re
import warnings

import torch
from torch import nn

from .. import ops
from ..errors import InputError
from ..methods import MatrixResult

__all__ = ["ExpertLinear", "UnfusedExperts", "check_no_fused_experts", "prune_matrix", "unfuse_experts",
           "warn_fallbacks"]

_EXPERT_LEAF = re.compile(r"^(\d+)\.([A-Za-z_][\w]*)\.weight$")


class ExpertLinear(nn.Linear):
    """One expert's matrix. While its expert runs, `token_index` holds the rows of the MoE block's
    flattened [tokens, hidden] input routed to it, so the statistics hook can line up the padding mask."""

    token_index: torch.Tensor | None = None


class _Expert(nn.Module):
    def __init__(self, up_leaves: list[str], down_leaf: str, hidden: int, inter: int, dtype: torch.dtype):
        super().__init__()
        self.up_leaves, self.down_leaf = tuple(up_leaves), down_leaf
        for leaf in up_leaves:
            self.add_module(leaf, ExpertLinear(hidden, inter, bias=False, device="meta", dtype=dtype))
        self.add_module(down_leaf, ExpertLinear(inter, hidden, bias=False, device="meta", dtype=dtype))


def _default_gate(act_fn):
    def gate(gate_up: torch.Tensor) -> torch.Tensor:
        g, u = gate_up.chunk(2, dim=-1)
        return act_fn(g) * u
    return gate


class UnfusedExperts(nn.Module):
    """A fused experts module (gate_up_proj [E, 2I, H], down_proj [E, H, I]) as E experts of
    nn.Linear matrices named as in the checkpoint. forward(hidden [T, H], top_k_index [T, k],
    top_k_weights [T, k]) is the eager forward of transformers' fused experts: for each expert, in
    index order, its routed tokens (by top-k slot, then token), gate/up, the module's own gating
    (`_apply_gate`: act(gate) * up), down, scaled by the routing weight and added to the output."""

    def __init__(self, fused: nn.Module, up_leaves: list[str], down_leaf: str):
        super().__init__()
        num_experts, rows, hidden = fused.gate_up_proj.shape
        inter = fused.down_proj.shape[2]
        if rows % len(up_leaves) or rows // len(up_leaves) != inter:
            raise InputError(f"{type(fused).__name__}: gate_up_proj has {rows} rows, which do not split into "
                             f"{len(up_leaves)} matrices of the down projection's {inter} inputs")
        self.num_experts = num_experts
        self.fused_class_name = type(fused).__name__  # --targets/--ignore class patterns still match it
        self._gate = getattr(fused, "_apply_gate", None) or _default_gate(fused.act_fn)
        dtype = fused.gate_up_proj.dtype
        for e in range(num_experts):
            self.add_module(str(e), _Expert(up_leaves, down_leaf, hidden, inter, dtype))

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, unfused from {self.fused_class_name}"

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor):
        out = torch.zeros_like(hidden_states)
        slots = top_k_index.t()  # [k, T]: torch.where walks it by top-k slot, then token, as the eager forward
        for e in range(self.num_experts):
            pos, tok = torch.where(slots == e)
            if tok.numel() == 0:
                continue
            expert = self._modules[str(e)]
            linears = [expert._modules[leaf] for leaf in (*expert.up_leaves, expert.down_leaf)]
            for lin in linears:
                lin.token_index = tok
            try:
                x = hidden_states[tok]
                up = [expert._modules[leaf](x) for leaf in expert.up_leaves]
                h = self._gate(torch.cat(up, dim=-1))
                y = expert._modules[expert.down_leaf](h) * top_k_weights[tok, pos, None]
            finally:
                for lin in linears:
                    lin.token_index = None
            out.index_add_(0, tok, y.to(out.dtype))
        return out


# -------------------------------------------------------------------------- building the skeleton
def _op_names(converter) -> list[tuple[str, int]]:
    return [(type(op).__name__, getattr(op, "dim", None)) for op in getattr(converter, "operations", [])]


def _expert_converter_kind(converter) -> str | None:
    """"gate_up": per-expert gate and up stacked then concatenated along the rows; "down": stacked."""
    ops_ = _op_names(converter)
    sources = converter.source_patterns
    if ops_ == [("MergeModulelist", 0), ("Concatenate", 1)] and len(sources) >= 2:
        return "gate_up"
    if ops_ == [("MergeModulelist", 0)] and len(sources) == 1:
        return "down"
    return None


def unfuse_experts(model: nn.Module, checkpoint_keys, renamings, converters, rename_source_key,
                   prefix: str | None) -> dict[str, str]:
    """Replace every fused experts module whose checkpoint tensors are stored per expert by an
    UnfusedExperts; returns {checkpoint key: model parameter name} for those tensors."""
    meta = dict(model.state_dict())
    found: dict[str, dict] = {}  # module path -> {"gate_up": {source index: leaf}, "down": {...}, experts, keys}
    for ckey in checkpoint_keys:
        target, source = rename_source_key(ckey, renamings, converters, prefix, meta)
        if source is None:
            continue
        conv = next((c for c in converters if source in c.source_patterns), None)
        kind = _expert_converter_kind(conv) if conv is not None else None
        path, _, attr = target.rpartition(".")
        plain, _ = rename_source_key(ckey, renamings, [], prefix, meta)
        m = _EXPERT_LEAF.match(plain[len(path) + 1:]) if plain.startswith(path + ".") else None
        if kind is None or m is None or attr != {"gate_up": "gate_up_proj", "down": "down_proj"}[kind]:
            continue  # not an expert stack: the skeleton refuses it as an unsupported conversion
        entry = found.setdefault(path, {"gate_up": {}, "down": {}, "experts": set(), "keys": {}})
        entry[kind][conv.source_patterns.index(source)] = m.group(2)
        entry["experts"].add(int(m.group(1)))
        entry["keys"][ckey] = plain
    names: dict[str, str] = {}
    for path, entry in found.items():
        fused = model.get_submodule(path)
        cls = type(fused).__name__
        unsupported = [flag for flag, bad in (("has_bias", True), ("is_transposed", True), ("is_concatenated", False),
                                              ("has_post_expert_norm", True), ("has_gate", False))
                       if getattr(fused, flag, not bad) == bad]
        if unsupported or not isinstance(getattr(fused, "gate_up_proj", None), nn.Parameter):
            raise InputError(f"{path} ({cls}) stores its experts in a layout featprune does not unfuse "
                             f"({', '.join(unsupported) or 'no gate_up_proj'}); only gated experts without "
                             "biases (Mixtral, Qwen2-MoE, Qwen3-MoE style) are supported")
        num = fused.gate_up_proj.shape[0]
        if entry["experts"] != set(range(num)) or len(entry["down"]) != 1 or len(entry["gate_up"]) != 2:
            raise InputError(f"the checkpoint's experts under {path} ({sorted(entry['experts'])[:8]}...) do not "
                             f"match config.json's {num} experts with gate, up and down matrices")
        up_leaves = [entry["gate_up"][j] for j in sorted(entry["gate_up"])]
        parent, _, child = path.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child,
                UnfusedExperts(fused, up_leaves, entry["down"][0]))
        names.update({ckey: plain for ckey, plain in entry["keys"].items()})
    return names


def check_no_fused_experts(model: nn.Module, key_of) -> None:
    """InputError if a fused [E, out, in] expert tensor is left (stored fused in the checkpoint)."""
    for name, p in model.named_parameters():
        if p.dim() == 3 and p.is_floating_point():
            raise InputError(f"checkpoint tensor {key_of(name) or name!r} {list(p.shape)} stores all experts fused in "
                             "one 3-D tensor; featprune prunes experts stored one matrix per expert (the Hub layout, "
                             "which save_pretrained writes)")


# ------------------------------------------------------------------------------------- pruning
def prune_matrix(method, weight: torch.Tensor, stats, *, sparsity, n: int, m: int, name: str) -> MatrixResult:
    """method.prune_matrix_ on one matrix, or magnitude pruning when a bucket group the method scores with
    received no calibration token (an expert the router never chose). The result's notes start with the
    matrix's calibration token count (and the fallback, if taken)."""
    if stats is None:
        return method.prune_matrix_(weight, None, sparsity=sparsity, n=n, m=m, name=name)
    notes = {"calibration_tokens": int(stats.count.sum())}
    if hasattr(stats, "bucket_index"):  # LinearStats: every bucket group the scores read needs tokens
        groups = method.bucket_groups() if hasattr(method, "bucket_groups") else [None]
        empty = any(int(stats.count[[stats.bucket_index(b) for b in g] if g else slice(None)].sum()) == 0
                    for g in groups)
    else:  # e.g. SparseGPT's HessianStats: one count over the buckets it read
        empty = notes["calibration_tokens"] == 0
    if not empty:
        result = method.prune_matrix_(weight, stats, sparsity=sparsity, n=n, m=m, name=name)
        return MatrixResult(result.pruned, {**notes, **result.notes})
    ones = torch.ones(weight.shape[1], dtype=torch.float32, device=weight.device)
    notes["fallback"] = "magnitude"
    return MatrixResult(ops.prune_rows_(weight, ones, sparsity=sparsity, n=n, m=m), notes)


def warn_fallbacks(block: int, matrices: dict) -> None:
    """One warning line per block naming the matrices pruned by magnitude for want of tokens."""
    names = [k for k, v in matrices.items() if v.get("fallback")]
    if names:
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        warnings.warn(f"featprune: block {block}: {len(names)} matrices received no calibration token (experts the "
                      f"router never chose): pruned by magnitude instead: {shown}", RuntimeWarning, stacklevel=2)
