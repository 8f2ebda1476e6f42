"""Structured pruning of a model held whole in memory, composed from the pure pieces of this package.

It is what bench/bench_structured.py measures and what tests/structured compares with an independent
naive pruner; the streaming engine (phase 2) runs the same steps one block at a time (docs/structured.md):
1. one dense pass: block influence (blocks=) and expert saliency and routing (experts=), all blocks at once;
2. block by block, on the stream of the already-cut blocks (the engine's captured block calls):
   heads: o_proj's input Gram -> group scores -> cut -> recovery; then
   mlp: down_proj's input Gram (after the attention cut) -> channel scores -> cut -> recovery;
   then the cut block runs to give the next block its input. Dropped blocks are skipped.
3. the cut checkpoint (block keys renumbered, experts cut) and the rewritten config.json are written.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..engine.batches import Batch
from ..engine.capture import capture_block_calls
from ..engine.families import PrunableLinear, find_blocks
from ..engine.hessian import collect_hessians
from ..engine.moe import UnfusedExperts
from ..errors import InputError
from .experts import ExpertSaliency, RoutingCounts, routing_report, watch_experts
from .layout import layout_for, moe_keys
from .recovery import RECOVERIES, adam_refit, call_loss, refit_consumer, token_loss
from .scores import SCORES, BlockInfluence, channel_scores, choose_blocks, group_scores, keep_lowest_removed
from .spec import StructuredPlan
from .surgery import (
    block_renumbering,
    cut_attention,
    cut_experts,
    cut_mlp,
    head_rows,
    renumber_block_key,
    rewrite_config,
)

__all__ = ["Options", "TARGETS", "advance_dense_stream", "cut_channels_step", "cut_heads_step", "dense_pass",
           "prune_in_memory", "read_checkpoint", "write_model"]


TARGETS = ("model", "block")


@dataclass(frozen=True)
class Options:
    """The defaults are the arm that measured best on held-out text (bench/results_structured.md)."""

    score: str = "wanda"  # channel/group score: scores.SCORES
    recovery: str = "adam"  # recovery.RECOVERIES
    damp: float = 0.01  # least-squares ridge, x mean diagonal of the kept Gram
    adam_steps: int = 80
    adam_lr: float = 2e-3  # the peak: it decays to 0 on a cosine
    adam_tokens: int = 1024  # tokens per minibatch of the MLP refit
    # what the MLP's Adam refit matches: "block", the dense MLP on the cut model's inputs; "model", the dense
    # model's residual stream after the block (the dense block on the dense stream), so each MLP also undoes
    # the drift the cuts before it left
    target: str = "model"
    seed: int = 0

    def check(self) -> None:
        if self.score not in SCORES:
            raise InputError(f"unknown structured score {self.score!r}; choose from {', '.join(SCORES)}")
        if self.recovery not in RECOVERIES:
            raise InputError(f"unknown recovery {self.recovery!r}; choose from {', '.join(RECOVERIES)}")
        if self.target not in TARGETS:
            raise InputError(f"unknown recovery target {self.target!r}; choose from {', '.join(TARGETS)}")

    def follows_dense_stream(self, plan: StructuredPlan) -> bool:
        """Whether the run carries the dense model's residual stream beside the cut one (target="model")."""
        return self.recovery == "adam" and self.target == "model" and plan.mlp_remove > 0


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


def _set_params(block: nn.Module, rel: dict, names) -> None:
    """Replace the block's parameters `names` (block-relative keys) by rel's tensors (new shapes allowed)."""
    for key in names:
        path, _, attr = key.rpartition(".")
        module = block.get_submodule(path)
        setattr(module, attr, nn.Parameter(rel[key].to(getattr(module, attr).dtype), requires_grad=False))


def _linear_keys(rel: dict, names) -> list[str]:
    return [f"{n}.{p}" for n in names for p in ("weight", "bias") if f"{n}.{p}" in rel]


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


# ----------------------------------------------------------------------------- one block's steps
class _Capture:
    """Hooks on a module during a pass: its masked inputs/outputs (token-wise) or its calls (sequence-wise)."""

    def __init__(self, module: nn.Module, masks: list, sequence: bool):
        self.masks, self.sequence = masks, sequence
        self.inputs, self.outputs, self.calls = [], [], []
        self.handle = module.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        if self.sequence:
            self.calls.append((tuple(a.detach() if torch.is_tensor(a) else a for a in args), dict(kwargs)))
            self.outputs.append(out.detach())
        else:
            keep = self.masks[len(self.outputs)].reshape(-1)
            x = args[0] if args else next(iter(kwargs.values()))
            self.inputs.append(x.reshape(-1, x.shape[-1])[keep].detach())
            self.outputs.append(out.reshape(-1, out.shape[-1])[keep].detach())

    def close(self):
        self.handle.remove()


def _gram(block, name: str, calls, hidden, batches, bucket_names, capture: _Capture | None, opts: Options,
          device: torch.device):
    """(sum x x^T, tokens) of the input of `name` over the batches (the engine's SparseGPT statistics pass),
    or (None, 0) without a pass when neither the score nor the recovery reads activations."""
    if opts.score == "magnitude" and opts.recovery == "none":
        return None, 0
    linear = PrunableLinear(name, block.get_submodule(name), transposed=False)
    try:
        stats = collect_hessians(block, [linear], calls, hidden, batches, bucket_names, None, device,
                                 call_orders=None)
    finally:
        if capture is not None:
            capture.close()
    hs = stats[name]
    return hs.hessian, int(hs.count.sum())


def _rms(gram: torch.Tensor | None, tokens: int) -> torch.Tensor | None:
    return None if gram is None else (gram.diagonal() / max(tokens, 1)).sqrt()


def cut_heads_step(block, rel, plan: StructuredPlan, layout, opts: Options, calls, hidden, batches, bucket_names,
                   device: torch.device = torch.device("cpu")):
    """Block `block` (attached, holding rel's tensors; rel: block-relative checkpoint keys): score its
    key/value groups on o_proj's streamed input, cut them, recover; the block's parameters are replaced.
    Returns (the cut rel, the report entry). The streaming engine runs this same step per block."""
    q, k, v, o = layout.attention
    attn_path = q.rpartition(".")[0]
    capture = _Capture(block.get_submodule(attn_path), [b.mask for b in batches], sequence=True) \
        if opts.recovery == "adam" else None
    gram, tokens = _gram(block, o, calls, hidden, batches, bucket_names, capture, opts, device)
    scores = group_scores(rel[f"{o}.weight"], _rms(gram, tokens), plan.num_kv_heads, opts.score)
    keep = keep_lowest_removed(scores, plan.kv_remove)
    dense_o = rel[f"{o}.weight"]
    rel = cut_attention(rel, layout, keep, plan.heads_per_group, plan.head_dim)
    if opts.recovery == "ls":
        q_idx, _ = head_rows(keep, plan.heads_per_group, plan.head_dim)
        rel[f"{o}.weight"] = refit_consumer(dense_o, gram, q_idx, opts.damp)
    names = _linear_keys(rel, layout.attention)
    _set_params(block, rel, names)
    if opts.recovery == "adam":
        loss = call_loss(block.get_submodule(attn_path), capture.calls, capture.outputs, [b.mask for b in batches])
        _adam_recover(block, rel, names, attn_path, loss, opts)
    return rel, {"kept_kv_groups": keep.tolist(), "group_scores": [round(float(s), 6) for s in scores]}


def _adam_recover(block, rel: dict, names: list[str], path: str, loss, opts: Options) -> None:
    """Adam on the cut module's kept weights (`names`, under `path`) against `loss`; the trained weights go
    into `rel` and the block."""
    local = {n[len(path) + 1:]: rel[n] for n in names}
    trained = adam_refit(local, loss, steps=opts.adam_steps, lr=opts.adam_lr, seed=opts.seed)
    rel.update({f"{path}.{n}": t for n, t in trained.items()})
    _set_params(block, rel, names)


def advance_dense_stream(block, calls, stream: list) -> list:
    """The block, still dense, run on the dense stream: its outputs per batch. `stream` is consumed, each
    input freed once used, so the run holds one copy of the dense stream, not two."""
    return [c.run(block, stream.pop(0)) for c in calls]


def _cat_and_clear(parts: list) -> torch.Tensor:
    """torch.cat(parts), emptying `parts` so the pieces are freed as soon as the whole exists."""
    whole = torch.cat(parts)
    parts.clear()
    return whole


def _drift(block, calls, hidden, dense_out, batches) -> torch.Tensor:
    """dense_out - block(hidden) on the non-padding tokens [N, hidden_size]: what the block's MLP would have to
    add for the cut stream to rejoin the dense one (the block as it stands: attention cut, MLP dense)."""
    drift = []
    for c, h, d, b in zip(calls, hidden, dense_out, batches):
        diff = d - c.run(block, h)
        drift.append(diff.reshape(-1, diff.shape[-1])[b.mask.reshape(-1).to(diff.device)])
    return torch.cat(drift)


def cut_channels_step(block, rel, plan: StructuredPlan, layout, opts: Options, calls, hidden, batches, bucket_names,
                      device: torch.device = torch.device("cpu"), dense_out: list | None = None):
    """As cut_heads_step, for the MLP's channels (down_proj's input features). dense_out: the dense block's
    outputs on the dense stream (Options.target "model"), per batch; None: match the dense MLP only."""
    gate, up, down = layout.mlp
    mlp_path = down.rpartition(".")[0]
    drift = _drift(block, calls, hidden, dense_out, batches) if dense_out is not None else None  # before the hook
    capture = _Capture(block.get_submodule(mlp_path), [b.mask for b in batches], sequence=False) \
        if opts.recovery == "adam" else None
    gram, tokens = _gram(block, down, calls, hidden, batches, bucket_names, capture, opts, device)
    scores = channel_scores(rel[f"{down}.weight"], _rms(gram, tokens), opts.score)
    keep = keep_lowest_removed(scores, plan.mlp_remove)
    dense_down = rel[f"{down}.weight"]
    rel = cut_mlp(rel, layout, keep)
    if opts.recovery == "ls":
        rel[f"{down}.weight"] = refit_consumer(dense_down, gram, keep, opts.damp)
    names = _linear_keys(rel, layout.mlp)
    _set_params(block, rel, names)
    if opts.recovery == "adam":
        post = block.get_submodule(layout.mlp_output_norm) if layout.mlp_output_norm else None
        inputs, targets = _cat_and_clear(capture.inputs), _cat_and_clear(capture.outputs)
        if post is not None:
            targets = post(targets)
        if drift is not None:
            targets.add_(drift.to(targets.dtype))
            del drift
        loss = token_loss(block.get_submodule(mlp_path), inputs, targets, opts.adam_tokens, post)
        _adam_recover(block, rel, names, mlp_path, loss, opts)
    return rel, {"removed_channels": sorted(set(range(scores.numel())) - set(keep.tolist()))}


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
            rel = _block_tensors(cut, prefix)
            entry: dict = {"index": i}
            dense_out = None if dense_stream is None else advance_dense_stream(block, calls[i], dense_stream)
            if plan.kv_remove:
                rel, info = cut_heads_step(block, rel, plan, layout, opts, calls[i], hidden, batches, bucket_names)
                entry.update(info)
            if plan.mlp_remove:
                rel, info = cut_channels_step(block, rel, plan, layout, opts, calls[i], hidden, batches, bucket_names,
                                              dense_out=dense_out)
                entry.update(info)
            dense_stream = dense_out
            cut = {k: v for k, v in cut.items() if not k.startswith(prefix)}
            cut.update({prefix + k: v for k, v in rel.items()})
            report["blocks"].append(entry)
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
