"""Structured pruning of a model held whole in memory, composed from the pure pieces of this package.

It is what bench/bench_structured.py measures and what tests/structured compares with an independent
naive pruner; the streaming engine (phase 2) runs the same steps one block at a time (docs/structured.md):
1. one dense pass: block influence (blocks=) and expert saliency and routing (experts=), all blocks at once;
2. block by block, on the stream of the already-cut blocks (the engine's captured block calls), steps.py's
   cut_block_steps, the engine's own:
   heads: o_proj's input Gram -> group scores -> cut -> recovery; then
   mlp: down_proj's input Gram (after the attention cut) -> channel scores -> cut -> recovery;
   then the cut block runs to give the next block its input. Dropped blocks are skipped.
3. the cut checkpoint (block keys renumbered, experts cut) and the rewritten config.json are written.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from ..engine.batches import Batch
from ..engine.capture import capture_block_calls
from ..engine.families import find_blocks
from ..engine.moe import UnfusedExperts
from ..errors import InputError
from .experts import ExpertSaliency, RoutingCounts, routing_report, watch_experts
from .layout import layout_for, moe_keys
from .options import Options
from .scores import BlockInfluence, choose_blocks, keep_lowest_removed
from .spec import StructuredPlan
from .steps import cut_block_steps
from .surgery import block_renumbering, cut_experts, renumber_block_key, rewrite_config

__all__ = ["Options", "dense_pass", "prune_in_memory", "read_checkpoint", "write_model"]


def read_checkpoint(model_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the model's safetensors files, by checkpoint key."""
    from safetensors.torch import load_file

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise InputError(f"no safetensors file in {model_dir}")
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        tensors.update(load_file(f))
    return tensors


def _block_tensors(ckpt: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in ckpt.items() if k.startswith(prefix)}


# ------------------------------------------------------------------------------------ dense pass
def _unfused_copy(fused: nn.Module, rel: dict, moe) -> UnfusedExperts:
    """An engine/moe.py UnfusedExperts holding the checkpoint's per-expert matrices of one block."""
    leaves = moe.experts[0]
    inter = fused.down_proj.shape[2]
    # which checkpoint matrix is which, by content (shapes can coincide): down, then the gate (first rows)
    down = next(leaf for leaf, key in leaves.items() if torch.equal(rel[key], fused.down_proj.data[0]))
    ups = [leaf for leaf in leaves if leaf != down]
    first = next(leaf for leaf in ups if torch.equal(rel[leaves[leaf]], fused.gate_up_proj.data[0, :inter]))
    up_leaves = [first] + [leaf for leaf in ups if leaf != first]  # the gate first: act(gate) * up
    unfused = UnfusedExperts(fused, up_leaves, down).to_empty(device=fused.gate_up_proj.device)
    for e, by_leaf in moe.experts.items():
        for leaf, key in by_leaf.items():
            unfused._modules[str(e)]._modules[leaf].weight.data.copy_(rel[key])
    return unfused


def _fused_experts(block: nn.Module) -> tuple[str, nn.Module]:
    for name, module in block.named_modules():
        if isinstance(getattr(module, "gate_up_proj", None), nn.Parameter):
            return name, module
    raise InputError(f"no fused experts module in {type(block).__name__}")


@torch.no_grad()
def dense_pass(model: nn.Module, ckpt: dict, batches: list[Batch], bucket_names: list[str], *, influence: bool,
               experts: bool) -> dict:
    """One forward of the dense model over the batches: per block its influence and, for MoE blocks,
    expert saliency and routing counts. {"influence": [...], "saliency": [...], "routing": [...]}."""
    path, blocks = find_blocks(model)
    current: dict = {}
    handles, restore = [], []
    infl = [BlockInfluence() for _ in blocks] if influence else []
    saliency: list = [None] * len(blocks)
    routing: list = [None] * len(blocks)
    watchers = []
    try:
        for i, block in enumerate(blocks):
            if influence:
                def pre(module, args, kwargs, i=i):
                    current["in"] = args[0] if args else kwargs["hidden_states"]

                def post(module, args, kwargs, output, i=i):
                    out = output[0] if isinstance(output, (tuple, list)) else output
                    infl[i].add(current["in"], out, current["mask"])

                handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
                handles.append(block.register_forward_hook(post, with_kwargs=True))
            rel = _block_tensors(ckpt, f"{path}.{i}.")
            moe = moe_keys(rel)
            if experts and moe is not None:
                name, fused = _fused_experts(block)
                unfused = _unfused_copy(fused, rel, moe)
                parent, _, child = name.rpartition(".")
                owner = block.get_submodule(parent) if parent else block
                setattr(owner, child, unfused)
                restore.append((owner, child, fused))
                saliency[i] = ExpertSaliency(moe.num_experts)
                routing[i] = RoutingCounts(moe.num_experts, bucket_names)
                watchers.append(watch_experts(unfused, saliency[i], routing[i], current))
        for w in watchers:
            w.__enter__()
        for batch in batches:
            current.update(mask=batch.mask, bucket=batch.bucket)
            model(input_ids=batch.ids, attention_mask=batch.mask.long(), use_cache=False)
    finally:
        for w in watchers:
            w.__exit__(None, None, None)
        for h in handles:
            h.remove()
        for owner, child, fused in restore:
            setattr(owner, child, fused)
    return {"influence": [b.value for b in infl], "saliency": saliency, "routing": routing}


# ------------------------------------------------------------------------------------------ driver
@torch.no_grad()
def prune_in_memory(model: nn.Module, ckpt: dict, config: dict, plan: StructuredPlan, batches: list[Batch],
                    bucket_names: list[str], opts: Options = Options()) -> tuple[dict, dict, dict]:
    """Cut `model` (loaded, fp32, eval; changed in place) and its checkpoint tensors `ckpt` by `plan`.
    Returns (cut checkpoint tensors, cut config.json dict, report)."""
    opts.check()
    path, blocks = find_blocks(model)
    layout = layout_for(plan.model_type) if (plan.mlp_remove or plan.kv_remove) else None
    report: dict = {**plan.describe(), "options": asdict(opts), "blocks": []}

    dense = {}
    if plan.blocks_remove or plan.experts_remove:
        dense = dense_pass(model, ckpt, batches, bucket_names, influence=bool(plan.blocks_remove),
                           experts=bool(plan.experts_remove))
    dropped = choose_blocks(dense["influence"], plan.blocks_remove) if plan.blocks_remove else []
    if plan.blocks_remove:
        report["block_influence"] = [round(v, 6) for v in dense["influence"]]
        report["dropped_blocks"] = dropped

    cut = dict(ckpt)
    if plan.mlp_remove or plan.kv_remove:
        calls, hidden = capture_block_calls(model, blocks, batches, torch.device("cpu"))
        dense_stream = list(hidden) if opts.follows_dense_stream(plan) else None
        for i, block in enumerate(blocks):
            if i in dropped:
                continue  # its input goes straight to the next kept block (the dense stream's too)
            prefix = f"{path}.{i}."
            rel, entry, dense_stream = cut_block_steps(block, _block_tensors(cut, prefix), plan, layout, opts,
                                                       calls[i], hidden, batches, bucket_names, torch.device("cpu"),
                                                       dense_stream)
            cut = {k: v for k, v in cut.items() if not k.startswith(prefix)}
            cut.update({prefix + k: v for k, v in rel.items()})
            report["blocks"].append({"index": i, **entry})
            if i + 1 < len(blocks):
                hidden = [c.run(block, h) for c, h in zip(calls[i], hidden)]
    if plan.experts_remove:
        report["routing"] = routing_report([r for r in dense["routing"] if r is not None])
        for i, sal in enumerate(dense["saliency"]):
            if sal is None:
                continue
            prefix = f"{path}.{i}."
            rel = _block_tensors(cut, prefix)
            scores = sal.scores()
            keep = keep_lowest_removed(scores, plan.experts_remove)
            rel = cut_experts(rel, moe_keys(rel), keep)
            cut = {k: v for k, v in cut.items() if not k.startswith(prefix)}
            cut.update({prefix + k: v for k, v in rel.items()})
            report.setdefault("experts", []).append({"index": i, "kept_experts": keep.tolist(),
                                                     "saliency": [round(float(s), 6) for s in scores]})
    if dropped:
        renumber = block_renumbering(len(blocks), dropped)
        out: dict = {}
        for k, v in cut.items():
            head = k[len(path) + 1:].split(".", 1)[0] if k.startswith(path + ".") else None
            if head is None or not head.isdigit():
                out[k] = v
            elif int(head) in renumber:
                out[renumber_block_key(k, path + ".", int(head), renumber[int(head)])] = v
        cut = out
    text_cfg = getattr(model.config, "get_text_config", lambda: model.config)()
    new_config = rewrite_config(config, plan, dropped, getattr(text_cfg, "layer_types", None))
    return cut, new_config, report


def write_model(model_dir: Path, out_dir: Path, tensors: dict, config: dict, report: dict) -> Path:
    """Write the cut model next to copies of the input's other files (tokenizer, generation config):
    OUT.partial/ first, renamed to OUT when complete."""
    from safetensors.torch import save_file

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    part = out_dir.with_name(out_dir.name + ".partial")
    if part.exists():
        shutil.rmtree(part)
    part.mkdir(parents=True)
    for f in model_dir.iterdir():
        if f.is_file() and f.suffix != ".safetensors" and f.name not in ("config.json", "model.safetensors.index.json"):
            shutil.copy2(f, part / f.name)
    save_file({k: v.contiguous() for k, v in tensors.items()}, part / "model.safetensors", metadata={"format": "pt"})
    (part / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (part / "featprune.json").write_text(json.dumps({"structured": report}, indent=1) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    part.rename(out_dir)
    return out_dir
