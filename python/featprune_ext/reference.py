"""Plain-PyTorch versions of the native kernels.

They are the test oracle and the fallback when the native module (or its CUDA
part) is unavailable. They favour obviousness over speed: a stable sort per row
instead of a selection, boolean indexing instead of a masked reduction.
"""

from __future__ import annotations

import math

import torch

__all__ = ["accumulate_hessian", "accumulate_stats", "pruned_per_row", "prune_mask", "prune_rows_"]


def pruned_per_row(cols: int, sparsity: float) -> int:
    """k = floor(cols * sparsity), rounded first so that 0.29 * 100 gives 29, not 28."""
    return int(math.floor(round(cols * sparsity, 6)))


def accumulate_stats(
    x: torch.Tensor,
    sumsq: torch.Tensor,
    count: torch.Tensor,
    *,
    token_mask: torch.Tensor | None = None,
    bucket: int = 0,
    absmax: torch.Tensor | None = None,
) -> None:
    """sumsq[bucket] += sum of x^2 over counted tokens; count[bucket] += #tokens; absmax = running max |x|.

    NaN propagates (the rule of csrc/include/featprune/kernels.h, which the CPU and CUDA
    kernels follow): a NaN in a counted token makes that feature's sumsq and absmax NaN,
    since sum, amax and torch.maximum all keep NaN; masked tokens are dropped first."""
    features = x.shape[-1]
    rows = x.reshape(-1, features).float()
    if token_mask is not None:
        rows = rows[token_mask.reshape(-1).bool()]
    sumsq[bucket] += rows.pow(2).sum(dim=0)
    count[bucket] += rows.shape[0]
    if absmax is not None and rows.shape[0] > 0:
        absmax[bucket] = torch.maximum(absmax[bucket], rows.abs().amax(dim=0))


def accumulate_hessian(x: torch.Tensor, hessian: torch.Tensor, count: torch.Tensor, *,
                       token_mask: torch.Tensor | None = None) -> None:
    """hessian += sum over counted tokens t of outer(x_t, x_t), one token at a time in float64;
    count += the number of counted tokens. The oracle of ops.accumulate_hessian."""
    features = x.shape[-1]
    rows = x.reshape(-1, features).double()
    if token_mask is not None:
        rows = rows[token_mask.reshape(-1).bool()]
    total = torch.zeros(features, features, dtype=torch.float64, device=x.device)
    for row in rows:
        total += torch.outer(row, row)
    hessian += total.to(hessian.dtype)
    count += rows.shape[0]


def _first_in_stable_order(score: torch.Tensor, protected: torch.Tensor, take: int) -> torch.Tensor:
    """Bool mask of the `take` first entries along the last dim when ordered by
    (protected, score, index): two stable sorts, least significant key first."""
    order = torch.sort(score, dim=-1, stable=True).indices
    order = order.gather(-1, torch.sort(protected.gather(-1, order).to(torch.uint8), dim=-1, stable=True).indices)
    mask = torch.zeros_like(score, dtype=torch.bool)
    mask.scatter_(-1, order[..., :take], True)
    return mask


def prune_mask(
    w: torch.Tensor,
    col_scale: torch.Tensor,
    *,
    sparsity: float | None = None,
    n: int = 0,
    m: int = 0,
    protect: torch.Tensor | None = None,
) -> torch.Tensor:
    """The mask (True = prune) that prune_rows_ applies, computed by sorting."""
    rows, cols = w.shape
    score = w.float().abs() * col_scale.float()  # fp32, same rounding as the kernel
    protected = torch.zeros(cols, dtype=torch.bool, device=w.device) if protect is None else protect.bool()
    protected = protected.expand(rows, cols)
    if m > 0:
        groups = (rows, cols // m, m)
        mask = _first_in_stable_order(score.reshape(groups), protected.reshape(groups), m - n)
        return mask.reshape(rows, cols) & ~protected
    k = pruned_per_row(cols, sparsity) if sparsity is not None else 0
    return _first_in_stable_order(score, protected, k)


def prune_rows_(
    w: torch.Tensor,
    col_scale: torch.Tensor,
    *,
    sparsity: float | None = None,
    n: int = 0,
    m: int = 0,
    protect: torch.Tensor | None = None,
    mask_out: torch.Tensor | None = None,
) -> int:
    """Zero the selected entries of w in place; returns how many were zeroed."""
    mask = prune_mask(w, col_scale, sparsity=sparsity, n=n, m=m, protect=protect)
    w.masked_fill_(mask, 0)
    if mask_out is not None:
        mask_out.copy_(mask)
    return int(mask.sum())
