"""One kept block's structured cut, shared by the in-memory pruner (inmemory.py) and the streaming engine
(streaming.cut_block): key/value groups, then MLP channels, each scored on the stream of the already-cut
blocks, cut and recovered; the block's parameters are replaced in place (docs/structured.md).

Adam's refits keep about Options.fit_tokens calibration tokens (the MLP's: `fit_token_masks`; attention's, which
replays whole calls: `fit_batches`), so their memory does not grow with the calibration set; the Gram matrices
behind the scores and the LS refit see every token.
"""

from __future__ import annotations

import torch
from torch import nn

from ..engine.families import PrunableLinear
from ..engine.hessian import collect_hessians
from .options import Options
from .recovery import adam_refit, call_loss, refit_consumer, rows_loss, token_loss
from .scores import channel_scores, group_scores, keep_lowest_removed
from .spec import StructuredPlan
from .surgery import cut_attention, cut_mlp, head_rows

__all__ = ["advance_dense_stream", "cut_block_steps", "cut_channels_step", "cut_heads_step", "fit_batches",
           "fit_token_masks", "set_params"]


def set_params(block: nn.Module, rel: dict, names) -> None:
    """Replace the block's parameters `names` (block-relative keys) by rel's tensors (new shapes allowed)."""
    for key in names:
        path, _, attr = key.rpartition(".")
        module = block.get_submodule(path)
        setattr(module, attr, nn.Parameter(rel[key].to(getattr(module, attr).dtype), requires_grad=False))


def _linear_keys(rel: dict, names) -> list[str]:
    return [f"{n}.{p}" for n in names for p in ("weight", "bias") if f"{n}.{p}" in rel]


def fit_token_masks(batches, fit_tokens: int, seed: int) -> list[torch.Tensor]:
    """Per batch, a boolean mask of the tokens the MLP refit keeps: every non-padding token when there are
    at most `fit_tokens`, else `fit_tokens` of them drawn uniformly without replacement
    (torch.randperm(N, generator seeded with `seed`)[:fit_tokens], N counting the non-padding tokens in
    batch order, each batch row-major)."""
    flat = [b.mask.reshape(-1).bool() for b in batches]
    total = sum(int(m.sum()) for m in flat)
    if total <= fit_tokens:
        return [b.mask for b in batches]
    chosen = torch.zeros(total, dtype=torch.bool)
    chosen[torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:fit_tokens]] = True
    masks, start = [], 0
    for b, m in zip(batches, flat):
        n = int(m.sum())
        sub = torch.zeros_like(m)
        sub[m] = chosen[start:start + n].to(m.device)
        masks.append(sub.reshape(b.mask.shape))
        start += n
    return masks


def fit_batches(batches, fit_tokens: int, seed: int) -> list[int]:
    """The batches the attention refit keeps (it replays whole calls, so it keeps whole batches): in the
    order torch.randperm(len(batches), generator seeded with `seed`), until they hold `fit_tokens`
    non-padding tokens or all are taken; ascending."""
    order = torch.randperm(len(batches), generator=torch.Generator().manual_seed(seed)).tolist()
    kept, tokens = [], 0
    for b in order:
        if tokens >= fit_tokens:
            break
        kept.append(b)
        tokens += int(batches[b].mask.sum())
    return sorted(kept)


def _tokens(t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """t's [..., hidden] rows where mask [...] holds, as [n, hidden]."""
    return t.reshape(-1, t.shape[-1])[mask.reshape(-1).to(t.device)]


class _StreamRows:
    """The MLP refit's minibatch rows for target "model", computed per step so that the fit keeps one
    vector per token, the cut stream's residual r entering the MLP's norm: x = norm(r) is the MLP's input
    and y = dense_out - r its target, dense_out read in place from the dense stream the run holds anyway."""

    def __init__(self, residual: torch.Tensor, norm: nn.Module, dense_out: list, masks: list):
        self.residual, self.norm = residual, norm  # residual [N, hidden]: the kept tokens, in batch order
        self.dense = [d.reshape(-1, d.shape[-1]) for d in dense_out]  # views, no copy
        rows = [m.reshape(-1).nonzero().squeeze(1) for m in masks]
        self.batch = torch.cat([torch.full((len(r),), b, dtype=torch.int64) for b, r in enumerate(rows)])
        self.row = torch.cat(rows)

    def __call__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            r = self.residual[idx.to(self.residual.device)]
            d = torch.empty(r.shape, dtype=torch.float32, device=r.device)
            batch, row = self.batch[idx], self.row[idx]
            for b in batch.unique().tolist():
                at = (batch == b).nonzero().squeeze(1)
                d[at.to(d.device)] = self.dense[b][row[at].to(d.device)].float()
            return self.norm(r), d.sub_(r.float())  # fp32: the difference of two large streams is small


class _CallCapture:
    """A forward hook keeping a module's calls (arguments) and outputs in the batches `masks` holds
    ({batch index: its mask}): what the attention refit replays."""

    def __init__(self, module: nn.Module, masks: dict):
        self.masks, self.calls, self.outputs, self.batch = masks, [], [], 0
        self.handle = module.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output):
        if self.batch in self.masks:
            out = output[0] if isinstance(output, (tuple, list)) else output
            self.calls.append((tuple(a.detach() if torch.is_tensor(a) else a for a in args), dict(kwargs)))
            self.outputs.append(out.detach())
        self.batch += 1

    def close(self):
        self.handle.remove()


class _TokenCapture:
    """A forward hook keeping a module's input and, with `outputs`, its output on the tokens of `masks` (one
    per batch), as [tokens, hidden] in batch order, written into tensors allocated at the first call: no
    pieces to concatenate, so never a second copy."""

    def __init__(self, module: nn.Module, masks: list, outputs: bool = True):
        self.masks, self.keep_outputs = masks, outputs
        self.total = sum(int(m.sum()) for m in masks)
        self.inputs = self.outputs = None
        self.batch = self.filled = 0
        self.handle = module.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output):
        x = args[0] if args else next(iter(kwargs.values()))
        out = output[0] if isinstance(output, (tuple, list)) else output
        if self.inputs is None:
            self.inputs = x.new_empty((self.total, x.shape[-1]))
            self.outputs = out.new_empty((self.total, out.shape[-1])) if self.keep_outputs else None
        mask = self.masks[self.batch]
        rows = _tokens(x.detach(), mask)
        end = self.filled + rows.shape[0]
        self.inputs[self.filled:end] = rows
        if self.keep_outputs:
            self.outputs[self.filled:end] = _tokens(out.detach(), mask)
        self.filled, self.batch = end, self.batch + 1

    def close(self):
        self.handle.remove()


def _gram(block, name: str, calls, hidden, batches, bucket_names, captures: list, opts: Options,
          device: torch.device):
    """(sum x x^T, tokens) of the input of `name` over the batches (the engine's SparseGPT statistics pass;
    `captures` listen to it and are closed after), or (None, 0) without a pass when neither the score nor
    the recovery reads activations."""
    if opts.score == "magnitude" and opts.recovery == "none":
        return None, 0
    linear = PrunableLinear(name, block.get_submodule(name), transposed=False)
    try:
        stats = collect_hessians(block, [linear], calls, hidden, batches, bucket_names, None, device,
                                 call_orders=None)
    finally:
        for capture in captures:
            capture.close()
    hs = stats[name]
    return hs.hessian, int(hs.count.sum())


def _rms(gram: torch.Tensor | None, tokens: int) -> torch.Tensor | None:
    return None if gram is None else (gram.diagonal() / max(tokens, 1)).sqrt()


def _adam_recover(block, rel: dict, names: list[str], path: str, loss, opts: Options, tokens: int) -> int:
    """Adam on the cut module's kept weights (`names`, under `path`) against `loss` over `tokens` kept
    calibration tokens; the trained weights go into `rel` and the block. Returns the steps run."""
    local = {n[len(path) + 1:]: rel[n] for n in names}
    steps = opts.steps_for(tokens)
    trained = adam_refit(local, loss, steps=steps, lr=opts.adam_lr, seed=opts.seed)
    rel.update({f"{path}.{n}": t for n, t in trained.items()})
    set_params(block, rel, names)
    return steps


def cut_heads_step(block, rel, plan: StructuredPlan, layout, opts: Options, calls, hidden, batches, bucket_names,
                   device: torch.device = torch.device("cpu")):
    """Block `block` (attached, holding rel's tensors; rel: block-relative checkpoint keys): score its
    key/value groups on o_proj's streamed input, cut them, recover; the block's parameters are replaced.
    Returns (the cut rel, the report entry)."""
    q, k, v, o = layout.attention
    attn_path = q.rpartition(".")[0]
    fit = capture = None
    if opts.recovery == "adam":
        fit = {b: batches[b].mask for b in fit_batches(batches, opts.fit_tokens, opts.seed)}
        capture = _CallCapture(block.get_submodule(attn_path), fit)
    gram, tokens = _gram(block, o, calls, hidden, batches, bucket_names, [capture] if capture else [], opts, device)
    scores = group_scores(rel[f"{o}.weight"], _rms(gram, tokens), plan.num_kv_heads, opts.score)
    keep = keep_lowest_removed(scores, plan.kv_remove)
    dense_o = rel[f"{o}.weight"]
    rel = cut_attention(rel, layout, keep, plan.heads_per_group, plan.head_dim)
    if opts.recovery == "ls":
        q_idx, _ = head_rows(keep, plan.heads_per_group, plan.head_dim)
        rel[f"{o}.weight"] = refit_consumer(dense_o, gram, q_idx, opts.damp)
    names = _linear_keys(rel, layout.attention)
    set_params(block, rel, names)
    info = {"kept_kv_groups": keep.tolist(), "group_scores": [round(float(s), 6) for s in scores]}
    if opts.recovery == "adam":
        loss = call_loss(block.get_submodule(attn_path), capture.calls, capture.outputs, list(fit.values()))
        tokens = sum(int(m.sum()) for m in fit.values())
        info["attention_refit_steps"] = _adam_recover(block, rel, names, attn_path, loss, opts, tokens)
    return rel, info


def cut_channels_step(block, rel, plan: StructuredPlan, layout, opts: Options, calls, hidden, batches, bucket_names,
                      device: torch.device = torch.device("cpu"), dense_out: list | None = None):
    """As cut_heads_step, for the MLP's channels (down_proj's input features). dense_out: the dense block's
    outputs on the dense stream, per batch (Options.target "model": the MLP is fit to what it must add to
    the cut stream for the stream to rejoin the dense one); None: fit to the dense MLP on the same inputs."""
    gate, up, down = layout.mlp
    mlp_path = down.rpartition(".")[0]
    captures = []
    if opts.recovery == "adam":
        fit = fit_token_masks(batches, opts.fit_tokens, opts.seed)
        if dense_out is None:  # the dense MLP's inputs and outputs
            captures.append(_TokenCapture(block.get_submodule(mlp_path), fit))
        else:  # the residual stream the MLP's output is added to: its norm's input
            captures.append(_TokenCapture(block.get_submodule(layout.mlp_input_norm), fit, outputs=False))
    gram, tokens = _gram(block, down, calls, hidden, batches, bucket_names, captures, opts, device)
    scores = channel_scores(rel[f"{down}.weight"], _rms(gram, tokens), opts.score)
    keep = keep_lowest_removed(scores, plan.mlp_remove)
    dense_down = rel[f"{down}.weight"]
    rel = cut_mlp(rel, layout, keep)
    if opts.recovery == "ls":
        rel[f"{down}.weight"] = refit_consumer(dense_down, gram, keep, opts.damp)
    names = _linear_keys(rel, layout.mlp)
    set_params(block, rel, names)
    info = {"removed_channels": sorted(set(range(scores.numel())) - set(keep.tolist()))}
    if opts.recovery == "adam":
        post = block.get_submodule(layout.mlp_output_norm) if layout.mlp_output_norm else None
        mlp = block.get_submodule(mlp_path)
        captured = captures[0]
        if dense_out is None:
            targets = post(captured.outputs) if post is not None else captured.outputs
            loss = token_loss(mlp, captured.inputs, targets, opts.adam_tokens, post)
        else:
            rows = _StreamRows(captured.inputs, block.get_submodule(layout.mlp_input_norm), dense_out, fit)
            loss = rows_loss(mlp, rows, captured.total, opts.adam_tokens, post)
        info["mlp_refit_steps"] = _adam_recover(block, rel, names, mlp_path, loss, opts, captured.total)
    return rel, info


def advance_dense_stream(block, calls, stream: list) -> list:
    """The block, still dense, run on the dense stream: its outputs per batch. `stream` is consumed, each
    input freed once used, so the run holds one copy of the dense stream, not two."""
    return [c.run(block, stream.pop(0)) for c in calls]


def cut_block_steps(block, rel: dict, plan: StructuredPlan, layout, opts: Options, calls, hidden, batches,
                    bucket_names, device: torch.device, dense_stream: list | None = None) \
        -> tuple[dict, dict, list | None]:
    """Block `block` (attached, holding rel's tensors by block-relative key) cut by the plan: heads, then MLP
    channels. Returns (its tensors after the cut, what was removed, the dense stream after the block).
    dense_stream: the dense model's hidden states entering the block (Options.follows_dense_stream;
    consumed), else None."""
    dense_out = None if dense_stream is None else advance_dense_stream(block, calls, dense_stream)
    entry: dict = {}
    if plan.kv_remove:
        rel, info = cut_heads_step(block, rel, plan, layout, opts, calls, hidden, batches, bucket_names, device)
        entry.update(info)
    if plan.mlp_remove:
        rel, info = cut_channels_step(block, rel, plan, layout, opts, calls, hidden, batches, bucket_names, device,
                                      dense_out=dense_out)
        entry.update(info)
    return rel, entry, dense_out
