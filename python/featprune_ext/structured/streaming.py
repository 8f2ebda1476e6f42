"""Structured pruning in the streaming engine (engine/run.py calls these; docs/structured.md, phase 2).

The engine keeps one block in memory at a time. For `--structured`:
1. `blocks=`: before the block loop, `influence_pass` streams the dense model once (like OWL's pass) for
   every block's ShortGPT influence; the dropped blocks are chosen from it and kept in progress.json.
2. In the loop, a dropped block is neither read nor written (its input goes to the next kept block); a
   kept block is cut by `cut_block` (the same steps as prune_in_memory: heads, then MLP channels, each on
   the stream of the already-cut blocks), optionally pruned unstructured afterwards by the run's method,
   and `block_entries` lists its shard under the block's new index.
3. At the end, `weight_map` indexes the written shards, `output_config` rewrites config.json and
   `report_section` is featprune.json's `structured` section.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..engine.capture import capture_block_calls
from ..engine.checkpoint import RawTensor
from ..errors import InputError
from .inmemory import Options, cut_channels_step, cut_heads_step
from .layout import layout_for
from .scores import BlockInfluence, choose_blocks
from .spec import StructuredPlan, StructuredSpec, validate
from .surgery import block_renumbering, rewrite_config

__all__ = ["StructuredRequest", "block_entries", "cut_block", "influence_pass", "output_config", "plan_for",
           "renumbered_prefix", "renumbering", "report_section", "weight_map"]


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
    if plan.experts_remove:
        raise InputError("--structured experts= is not wired into the streaming engine yet: use "
                         "featprune_ext.structured.prune_in_memory for mixture-of-experts models")
    if dist.enabled:
        raise InputError("--structured does not run under torchrun yet: run it on one process")
    for i, prefix in enumerate(skel.block_prefix):  # the cut steps address the block's modules by checkpoint name
        for name, _ in skel.blocks[i].named_parameters():
            if skel.block_key(i, name) != prefix + name:
                raise InputError(f"--structured: block {i}'s parameter {name!r} is stored as "
                                 f"{skel.block_key(i, name)!r}; structured cuts need checkpoint names that "
                                 "follow the module tree")
    return plan


@torch.no_grad()
def influence_pass(skel, device, batches, calls, hidden, count: int) -> tuple[dict, list[torch.Tensor]]:
    """Stream the dense model once: ({block_influence, dropped_blocks, time_s}, fresh inputs of block 0)."""
    t0 = time.perf_counter()
    influence = []
    for i in range(skel.num_blocks):
        tensors = skel.read_block(i)
        block = skel.attach_block(i, tensors, device, skel.dtype)
        del tensors
        acc, outputs = BlockInfluence(), []
        for c, h, b in zip(calls[i], hidden, batches):
            out = c.run(block, h)
            acc.add(h, out, b.mask)
            outputs.append(out)
        influence.append(acc.value)
        hidden = outputs  # dense outputs feed the next block
        skel.release_block(i)
        del block
    record = {"block_influence": influence, "dropped_blocks": choose_blocks(influence, count),
              "time_s": round(time.perf_counter() - t0, 4)}
    _, fresh = capture_block_calls(skel.model, skel.blocks, batches, device)  # embeddings only: cheap
    return record, fresh


def cut_block(skel, plan: StructuredPlan, options: Options, i: int, block, tensors: dict, calls, hidden, batches,
              bucket_names, device) -> tuple[dict, dict]:
    """Cut attached block i (its tensors by checkpoint key) as prune_in_memory does: (its tensors by
    block-relative key after the cut, what was removed)."""
    prefix = skel.block_prefix[i]
    rel = {k[len(prefix):]: t for k, t in tensors.items()}
    layout = layout_for(plan.model_type)
    entry: dict = {}
    if plan.kv_remove:
        rel, info = cut_heads_step(block, rel, plan, layout, options, calls, hidden, batches, bucket_names, device)
        entry.update(info)
    if plan.mlp_remove:
        rel, info = cut_channels_step(block, rel, plan, layout, options, calls, hidden, batches, bucket_names, device)
        entry.update(info)
    return rel, entry


def renumbered_prefix(prefix: str, i: int, new: int) -> str:
    """`model.layers.7.` -> `model.layers.5.`."""
    tail = f"{i}."
    if not prefix.endswith(tail):
        raise ValueError(f"block prefix {prefix!r} does not end with its index {i}")
    return prefix[: len(prefix) - len(tail)] + f"{new}."


def block_entries(skel, i: int, new: int, rel: dict, originals: dict, pruned: dict) -> list:
    """Block i's shard entries under index `new`: a tensor read from the input and left as it was is
    copied byte for byte; a cut, refit or pruned one is written in the input's dtype. pruned:
    block-relative key -> the pruned weight (unstructured pruning after the cut)."""
    prefix, out = skel.block_prefix[i], renumbered_prefix(skel.block_prefix[i], i, new)
    entries = []
    for key in sorted(rel):
        source = prefix + key
        t = pruned.get(key, rel[key])
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
        section["block_influence"] = [round(v, 6) for v in record["block_influence"]]
        section["dropped_blocks"] = record["dropped_blocks"]
        section["influence_pass_s"] = record["time_s"]
    for layer in sorted(layers, key=lambda r: r["index"]):
        if "structured" in layer:
            section["blocks"].append({"index": layer["index"], **layer["structured"]})
    return section


def renumbering(plan: StructuredPlan, record: dict | None) -> dict[int, int]:
    return block_renumbering(plan.num_blocks, record["dropped_blocks"] if record else [])
