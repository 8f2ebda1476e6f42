"""Structured pruning in the streaming engine (engine/run.py calls these; docs/structured.md, phase 2).

The engine keeps one block in memory at a time. For `--structured`:
1. `blocks=` and `experts=`: before the block loop, `dense_pass` streams the dense model once (like OWL's
   pass) for every block's ShortGPT influence and, in MoE blocks, REAP expert saliency and per-language
   routing counts; the dropped blocks and kept experts are chosen from it and kept in progress.json.
2. In the loop, a dropped block is neither read nor written (its input goes to the next kept block); a
   kept block is cut by `cut_block` (steps.cut_block_steps, as in prune_in_memory: heads, then MLP channels,
   each on the stream of the already-cut blocks), optionally pruned unstructured afterwards by the run's method,
   MoE blocks lose their unkept experts and router rows (the forward keeps them all, as prune_in_memory
   does: expert choices come from the dense pass), and `block_entries` lists its shard under the block's
   new index.
3. At the end, `weight_map` indexes the written shards, `output_config` rewrites config.json and
   `report_section` is featprune.json's `structured` section.
"""

from __future__ import annotations

import contextlib
import json
import struct
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..engine.capture import capture_block_calls
from ..engine.checkpoint import RawTensor
from ..engine.moe import UnfusedExperts
from ..errors import InputError
from .experts import ExpertSaliency, RoutingCounts, routing_report, watch_experts
from .layout import layout_for, moe_keys
from .options import Options
from .scores import BlockInfluence, choose_blocks, keep_lowest_removed
from .spec import StructuredPlan, StructuredSpec, validate
from .steps import cut_block_steps
from .surgery import block_renumbering, cut_experts, rewrite_config

__all__ = ["StructuredRequest", "block_entries", "cut_block", "cut_block_shard", "cut_in_features", "dense_pass",
           "output_config", "plan_for", "renumbered_prefix", "renumbering", "report_section", "weight_map"]


@dataclass(frozen=True)
class StructuredRequest:
    """`--structured SPEC` and its score and recovery options (settings.StructuredSettings)."""

    spec: StructuredSpec
    options: Options = Options()

    def describe(self) -> dict:
        return {"spec": str(self.spec), "options": asdict(self.options)}


def plan_for(skel, request: StructuredRequest, dist) -> StructuredPlan:
    """The request checked against the model (InputError before any work)."""
    request.options.check()
    plan = validate(request.spec, skel.config)
    if dist.enabled:
        raise InputError("--structured does not run under torchrun yet: run it on one process")
    layout = layout_for(plan.model_type) if (plan.mlp_remove or plan.kv_remove) else None
    cut = [*(layout.attention if plan.kv_remove else ()), *(layout.mlp if plan.mlp_remove else ())]
    for i, prefix in enumerate(skel.block_prefix):  # the cut steps address the block's modules by checkpoint name
        for name in (f"{linear}.weight" for linear in cut):
            if skel.block_key(i, name) != prefix + name:
                raise InputError(f"--structured: block {i}'s parameter {name!r} is stored as "
                                 f"{skel.block_key(i, name)!r}; structured cuts need checkpoint names that "
                                 "follow the module tree")
    return plan


def cut_in_features(plan: StructuredPlan) -> dict[str, int]:
    """The consumers' input widths after the cut, by block-relative weight name (down_proj: the kept
    channels; o_proj: the kept query heads x head_dim): what an N:M pattern must divide."""
    widths: dict[str, int] = {}
    if plan.mlp_remove:
        widths[f"{layout_for(plan.model_type).mlp[2]}.weight"] = plan.intermediate_size - plan.mlp_remove
    if plan.kv_remove:
        kept_heads = plan.num_heads - plan.kv_remove * plan.heads_per_group
        widths[f"{layout_for(plan.model_type).attention[3]}.weight"] = kept_heads * plan.head_dim
    return widths


def _unfused(block) -> UnfusedExperts | None:
    return next((m for m in block.modules() if isinstance(m, UnfusedExperts)), None)


@torch.no_grad()
def dense_pass(skel, plan: StructuredPlan, device, batches, bucket_names, calls, hidden) \
        -> tuple[dict, list[torch.Tensor]]:
    """Stream the dense model once: (the record progress.json keeps: block_influence and dropped_blocks
    (blocks=), per MoE block its kept experts and saliency and the routing report (experts=), time_s;
    fresh inputs of block 0)."""
    t0 = time.perf_counter()
    influence, experts, routing = [], {}, []
    for i in range(skel.num_blocks):
        tensors = skel.read_block(i)
        block = skel.attach_block(i, tensors, device, skel.dtype)
        del tensors
        unfused = _unfused(block) if plan.experts_remove else None
        saliency = counts = None
        current: dict = {}
        watch = contextlib.nullcontext()
        if unfused is not None:
            saliency, counts = ExpertSaliency(unfused.num_experts), RoutingCounts(unfused.num_experts, bucket_names)
            watch = watch_experts(unfused, saliency, counts, current)
        acc, outputs = BlockInfluence(), []
        with watch:
            for c, h, b in zip(calls[i], hidden, batches):
                current.update(mask=b.mask, bucket=b.bucket)
                out = c.run(block, h)
                acc.add(h, out, b.mask)
                outputs.append(out)
        influence.append(acc.value)
        if unfused is not None:
            scores = saliency.scores()
            experts[str(i)] = {"kept_experts": keep_lowest_removed(scores, plan.experts_remove).tolist(),
                               "saliency": [round(float(v), 6) for v in scores]}
            routing.append(counts)
        hidden = outputs  # dense outputs feed the next block
        skel.release_block(i)
        del block
    record: dict = {"time_s": round(time.perf_counter() - t0, 4)}
    if plan.blocks_remove:
        record.update(block_influence=influence, dropped_blocks=choose_blocks(influence, plan.blocks_remove))
    if plan.experts_remove:
        record.update(experts=experts, routing=routing_report(routing))
    _, fresh = capture_block_calls(skel.model, skel.blocks, batches, device)  # embeddings only: cheap
    return record, fresh


def cut_block(skel, plan: StructuredPlan, options: Options, i: int, block, tensors: dict, calls, hidden, batches,
              bucket_names, device, dense_stream: list | None = None) -> tuple[dict, dict, list | None]:
    """Cut attached block i (its tensors by checkpoint key) with steps.cut_block_steps, as prune_in_memory
    does: (its tensors by block-relative key after the cut, what was removed, the dense stream after the
    block). dense_stream: the dense model's hidden states entering block i (Options.follows_dense_stream;
    consumed), else None."""
    prefix = skel.block_prefix[i]
    rel = {k[len(prefix):]: t for k, t in tensors.items()}
    return cut_block_steps(block, rel, plan, layout_for(plan.model_type), options, calls, hidden, batches,
                           bucket_names, device, dense_stream)


def _kept_experts(record: dict | None, i: int) -> list[int] | None:
    """The experts the dense pass kept in block i (None: not an MoE block, or no experts= cut)."""
    kept = (record or {}).get("experts", {}).get(str(i))
    return None if kept is None else kept["kept_experts"]


def cut_block_shard(skel, plan: StructuredPlan, record: dict | None, i: int, linears, cut, matrices: dict):
    """Block i's shard entries after the cut (and the method's pruning of the cut matrices, if any), under
    the block's new index; the per-matrix report, with the matrices' cut shapes. cut: cut_block's
    (block-relative tensors, what was removed) and the block's original tensors; record: the dense pass's."""
    rel, removed, originals = cut
    if matrices:  # the method pruned the cut matrices in place: take them by checkpoint name
        prefix = skel.block_prefix[i]
        rel = {**rel, **{skel.block_key(i, pl.param_name)[len(prefix):]: pl.module.weight.data for pl in linears}}
    kept = _kept_experts(record, i)
    if kept is not None:  # the experts the dense pass did not keep, and their router rows, leave the output
        moe = moe_keys(rel)
        gone = {skel.block_prefix[i] + key for e, leaves in moe.experts.items() if e not in kept
                for key in leaves.values()}
        matrices = {k: v for k, v in matrices.items() if k not in gone}  # and the report
        rel = cut_experts(rel, moe, torch.tensor(kept, dtype=torch.int64))
    new = renumbering(plan, record)[i]
    removed["output_index"] = new
    if not matrices:  # no unstructured pruning: report the cut matrices' shapes, dense
        matrices = {skel.block_key(i, pl.param_name): {"shape": list(pl.module.weight.shape), "pruned": 0,
                                                        "sparsity": 0.0} for pl in linears}
    return block_entries(skel, i, new, rel, originals), matrices


def renumbered_prefix(prefix: str, i: int, new: int) -> str:
    """`model.layers.7.` -> `model.layers.5.`."""
    tail = f"{i}."
    if not prefix.endswith(tail):
        raise ValueError(f"block prefix {prefix!r} does not end with its index {i}")
    return prefix[: len(prefix) - len(tail)] + f"{new}."


def block_entries(skel, i: int, new: int, rel: dict, originals: dict) -> list:
    """Block i's shard entries under index `new` (rel: its tensors by block-relative checkpoint key): a
    tensor read from the input and left as it was is copied byte for byte; a cut, refit or pruned one is
    written in the input's dtype."""
    prefix, out = skel.block_prefix[i], renumbered_prefix(skel.block_prefix[i], i, new)
    entries = []
    for key in sorted(rel):
        source, t = prefix + key, rel[key]
        if t is originals.get(source):
            entries.append((out + key, RawTensor(skel.ckpt, source)))
        else:
            stored = skel.ckpt.info(source).dtype
            entries.append((out + key, t.detach().to(device="cpu", dtype=stored).contiguous()))
    return entries


def _safetensors_keys(path: Path) -> dict[str, int]:
    """{tensor name: data bytes} from a safetensors file's header."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return {k: v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"}


def weight_map(part: Path, shard_names: list[str]) -> tuple[dict[str, str], int]:
    """(tensor -> shard, total data bytes) of the shards written (dropped blocks have none)."""
    mapping, total = {}, 0
    for name in shard_names:
        path = part / name
        if not path.exists():
            continue
        for key, nbytes in _safetensors_keys(path).items():
            mapping[key] = name
            total += nbytes
    return mapping, total


def output_config(model_dir: Path, skel, plan: StructuredPlan, dropped: list[int]) -> dict:
    """config.json of the cut model (Gemma 3's layer_types follow the kept blocks)."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    layer_types = getattr(skel.config.get_text_config(), "layer_types", None)
    return rewrite_config(config, plan, dropped, layer_types)


def report_section(request: StructuredRequest, plan: StructuredPlan, record: dict | None, layers: list[dict]) -> dict:
    """featprune.json's `structured`: the plan, the options, block influence and dropped blocks, and what
    each kept block lost (under its input index, with its output index)."""
    section = {**plan.describe(), "options": asdict(request.options), "blocks": []}
    if record is not None:
        section["dense_pass_s"] = record["time_s"]
        if "block_influence" in record:
            section["block_influence"] = [round(v, 6) for v in record["block_influence"]]
            section["dropped_blocks"] = record["dropped_blocks"]
        if "experts" in record:
            section["experts"] = [{"index": int(i), **e} for i, e in sorted(record["experts"].items(),
                                                                             key=lambda kv: int(kv[0]))]
            section["routing"] = record["routing"]
    for layer in sorted(layers, key=lambda r: r["index"]):
        if "structured" in layer:
            section["blocks"].append({"index": layer["index"], **layer["structured"]})
    return section


def renumbering(plan: StructuredPlan, record: dict | None) -> dict[int, int]:
    return block_renumbering(plan.num_blocks, (record or {}).get("dropped_blocks", []))
