"""The statistics pass: run a block over every calibration batch with hooks that stream each
prunable linear's input into ops.accumulate_stats (padding masked out)."""

from __future__ import annotations

from typing import Any

import torch

from .. import ops
from ..methods import LinearStats

__all__ = ["collect_stats"]


def collect_stats(block, linears, calls, hidden, batches, bucket_names, device) -> dict[str, LinearStats]:
    """Run the block over every batch with hooks streaming each linear's input into its stats."""
    stats = {pl.name: LinearStats.zeros(pl.in_features, list(bucket_names), device) for pl in linears}
    current: dict[str, Any] = {}

    def hook_for(name):
        st = stats[name]
        partial = torch.zeros(1, st.sumsq.shape[1], dtype=torch.float32, device=st.sumsq.device)  # reused per batch

        def hook(module, args, kwargs):
            x = args[0] if args else next(iter(kwargs.values()))
            mask = current["mask"]
            if x.shape[:-1] != mask.shape:
                if x.numel() // x.shape[-1] != mask.numel():
                    raise RuntimeError(f"{name} got input {tuple(x.shape)} that does not line up with the "
                                       f"{tuple(mask.shape)} token mask")
                mask = mask.reshape(x.shape[:-1])
            # The kernel sums this batch into a zeroed fp32 row; adding it to a float64 total is
            # exact in practice, so the result does not depend on batch order or on how the
            # batches were split among ranks (distributed.py).
            b = current["bucket"]
            partial.zero_()
            ops.accumulate_stats(x.detach(), partial, st.count[b:b + 1], token_mask=mask, absmax=st.absmax[b:b + 1])
            st.sumsq[b] += partial[0].double()

        return hook

    handles = [pl.module.register_forward_pre_hook(hook_for(pl.name), with_kwargs=True) for pl in linears]
    try:
        for call, h, batch in zip(calls, hidden, batches):
            current["mask"] = batch.mask.to(device)
            current["bucket"] = batch.bucket
            call.run(block, h)
    finally:
        for handle in handles:
            handle.remove()
    return stats
