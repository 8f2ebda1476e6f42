"""The statistics pass: run a block over every calibration batch with hooks that stream each
prunable linear's input into ops.accumulate_stats (padding masked out). Each batch stops at the
block's last linear input (call_order.py), except in passes that keep the block's outputs (OWL)."""

from __future__ import annotations

from typing import Any

import torch

from .. import ops
from ..errors import NonFiniteError
from ..methods import LinearStats
from .call_order import CallOrder, InputsSeen

__all__ = ["check_finite_stats", "collect_stats", "non_finite_error", "token_mask_for"]


def token_mask_for(x: torch.Tensor, mask: torch.Tensor, routed: torch.Tensor | None, name: str) -> torch.Tensor:
    """The batch's token mask (True = counted) shaped like x's tokens, as the linear `name` sees them:
    `routed` is an MoE expert's `token_index` (the rows of its routed tokens, moe.py), else None."""
    if routed is not None:
        mask = mask.reshape(-1)[routed]
    if x.shape[:-1] != mask.shape:
        if x.numel() // x.shape[-1] != mask.numel():
            raise RuntimeError(f"{name} got input {tuple(x.shape)} that does not line up with the "
                               f"{tuple(mask.shape)} token mask")
        mask = mask.reshape(x.shape[:-1])
    return mask


def collect_stats(block, linears, calls, hidden, batches, bucket_names, device,
                  outputs: list | None = None, call_orders: dict | None = None) -> dict[str, LinearStats]:
    """Run the block over every batch with hooks streaming each linear's input into its stats
    (and append the block's output per batch to `outputs` when given: OWL's dense pass).
    `call_orders`: call_order.call_orders_for_run()'s dict, or None: every batch runs whole."""
    stats = {pl.name: LinearStats.zeros(pl.in_features, list(bucket_names), device) for pl in linears}
    current: dict[str, Any] = {}
    order = CallOrder(call_orders if outputs is None else None, block, [pl.name for pl in linears])

    def hook_for(name):
        st = stats[name]
        # this batch's sums, count and max |x| (reused per batch), merged into the totals below
        partial = torch.zeros(1, st.sumsq.shape[1], dtype=torch.float32, device=st.sumsq.device)
        count = torch.zeros(1, dtype=torch.int64, device=st.count.device)
        absmax = torch.zeros(1, st.absmax.shape[1], dtype=torch.float32, device=st.absmax.device)

        def hook(module, args, kwargs):
            x = args[0] if args else next(iter(kwargs.values()))
            routed = getattr(module, "token_index", None)  # an MoE expert sees only its routed tokens
            mask = token_mask_for(x, current["mask"], routed, name)
            # The kernel sums this batch into a zeroed fp32 row; adding it to a float64 total is
            # exact in practice, so the result does not depend on batch order or on how the
            # batches were split among ranks (distributed.py).
            b = current["bucket"]
            last = current["last"]
            if routed is None and last is not None and last[0] is x and last[1] == x._version:
                # the same tensor as the previous linear's input (q/k/v, gate/up): the same sums
                sums, counted, maxima = last[2:]
            else:
                sums, counted, maxima = partial, count, absmax
                for t in (partial, count, absmax):
                    t.zero_()
                ops.accumulate_stats(x.detach(), partial, count, token_mask=mask, absmax=absmax)
                current["last"] = (x, x._version, partial, count, absmax) if routed is None else None
            st.sumsq[b] += sums[0].double()
            st.count[b] += counted[0]
            torch.maximum(st.absmax[b], maxima[0], out=st.absmax[b])
            order.saw(name, routed is not None)

        return hook

    handles = [pl.module.register_forward_pre_hook(hook_for(pl.name), with_kwargs=True) for pl in linears]
    try:
        for call, h, batch in zip(calls, hidden, batches):
            current.update(mask=batch.mask.to(device), bucket=batch.bucket, last=None)
            order.start_batch()
            try:
                out = call.run(block, h)
                order.end_batch()
            except InputsSeen:
                out = None
            current["last"] = None
            if outputs is not None:
                outputs.append(out)
    finally:
        for handle in handles:
            handle.remove()
    return stats


def non_finite_error(matrix: str, index: int, dtype: torch.dtype) -> NonFiniteError:
    """NaN or inf in the input of `matrix` (block `index`): the error, with the likely cause."""
    hint = ""
    if dtype in (torch.float16, torch.bfloat16):
        name = str(dtype).replace("torch.", "")
        hint = f"; the forward passes run in {name}, which can overflow: rerun with --dtype float32"
    return NonFiniteError(f"non-finite activations (NaN or inf) reach the input of {matrix} (block {index}) "
                          f"on the calibration data{hint}")


def check_finite_stats(prefix: str, index: int, linears, stats: dict[str, LinearStats], dtype: torch.dtype) -> None:
    """NonFiniteError naming the first linear whose input statistics hold NaN or inf."""
    for pl in linears:
        st = stats[pl.name]
        if not (bool(torch.isfinite(st.sumsq).all()) and bool(torch.isfinite(st.absmax).all())):
            raise non_finite_error(f"{prefix}{pl.name}", index, dtype)
