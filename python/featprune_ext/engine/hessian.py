"""SparseGPT's statistics pass: run a block over the calibration batches with hooks that add each
prunable linear's input into its group's Hessian sum (ops.accumulate_hessian, padding masked out).

Linears that read the same tensor (q/k/v after the attention norm, gate/up after the MLP norm)
share one sum, computed once per batch. Sharing is detected at run time, whatever the family:
on the first batch, a linear whose input is the very tensor (or an identical view of it) an
earlier linear received in the same batch joins that linear's group. Tensors are remembered by
weak reference, so a freed input whose memory is reused cannot be mistaken for a shared one.
Later batches check that the grouping still holds. Each batch stops at the block's last linear
input (call_order.py).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch

from .. import ops
from ..methods import HessianStats
from .call_order import CallOrder, InputsSeen
from .stats import non_finite_error, token_mask_for

__all__ = ["check_finite_hessians", "collect_hessians"]


def _same_tensor(ref: weakref.ref, x: torch.Tensor) -> bool:
    t = ref()
    if t is None:
        return False
    return t is x or (t.data_ptr() == x.data_ptr() and t.shape == x.shape and t.stride() == x.stride()
                      and t.dtype == x.dtype and t._version == x._version)


def collect_hessians(block, linears, calls, hidden, batches, bucket_names, base_buckets, device,
                     dist=None, call_orders: dict | None = None) -> dict[str, HessianStats]:
    """{linear name: its group's HessianStats} over the batches of `base_buckets` (None: all),
    summed over this rank's batches and all-reduced across ranks when `dist` is given.
    `call_orders`: call_order.call_orders_for_run()'s dict, or None: every batch runs whole."""
    use = None if not base_buckets else {bucket_names.index(b) for b in base_buckets}
    group_of: dict[str, HessianStats] = {}
    groups: list[HessianStats] = []
    current: dict[str, Any] = {"batch": -1, "seen": []}  # seen: (weakref to an input, its group) this batch
    order = CallOrder(call_orders, block, [pl.name for pl in linears])

    def hook_for(pl):
        name = pl.name

        def hook(module, args, kwargs):
            routed = getattr(module, "token_index", None)  # an MoE expert sees only its routed tokens
            add(args, kwargs, routed)
            order.saw(name, routed is not None)

        def add(args, kwargs, routed):
            x = args[0] if args else next(iter(kwargs.values()))
            match = next((g for ref, g in current["seen"] if _same_tensor(ref, x)), None)
            batch = current["batch"]
            hs = group_of.get(name)
            if hs is None:  # first batch: join the group of an identical input, or start one
                if match is not None:
                    group_of[name] = match
                    match.names.append(name)
                    match.users += 1
                    return
                hs = HessianStats(pl.in_features, device, [name])
                group_of[name] = hs
                groups.append(hs)
            elif hs.last_batch == batch:  # a later member of a shared group: added already
                if match is not hs:
                    raise RuntimeError(f"{name} shared its input with {hs.names[0]} on the first calibration batch "
                                       "but not on a later one")
                return
            hs.last_batch = batch
            current["seen"].append((weakref.ref(x), hs))
            if current["skip"]:  # a batch of another bucket: grouped (the same on every rank), not added
                return
            mask = token_mask_for(x, current["mask"], routed, name)
            ops.accumulate_hessian(x.detach(), hs.hessian, hs.count, token_mask=mask)

        return hook

    handles = [pl.module.register_forward_pre_hook(hook_for(pl), with_kwargs=True) for pl in linears]
    try:
        for b, (call, h, batch) in enumerate(zip(calls, hidden, batches)):
            skip = use is not None and batch.bucket not in use
            current.update(batch=b, seen=[], mask=batch.mask.to(device), skip=skip)
            order.start_batch()
            try:
                call.run(block, h)
                order.end_batch()
            except InputsSeen:
                pass
            current["seen"] = []
    finally:
        for handle in handles:
            handle.remove()
    for pl in linears:  # never called (no token reached it): an empty sum, refused when pruning
        if pl.name not in group_of:
            group_of[pl.name] = HessianStats(pl.in_features, device, [pl.name])
            groups.append(group_of[pl.name])
    if dist is not None:
        for hs in groups:  # one group at a time: no concatenated copy of every Hessian
            dist.all_reduce_([hs.hessian], [])
            dist.all_reduce_([hs.count], [])
    return group_of


def check_finite_hessians(prefix: str, index: int, group_of: dict[str, HessianStats], dtype: torch.dtype) -> None:
    """NonFiniteError naming the first linear whose input Hessian holds NaN or inf."""
    checked = set()
    for name, hs in group_of.items():
        if id(hs) in checked:
            continue
        checked.add(id(hs))
        if not bool(torch.isfinite(hs.hessian).all()):
            raise non_finite_error(f"{prefix}{name}", index, dtype)
