"""SparseGPT (Frantar & Alistarh, 2023): prune with second-order (OBS) updates of the kept weights.

For a linear with inputs X (rows = calibration tokens), the layer-wise Hessian is
H = 2 X^T X / n. Its inverse, through its upper Cholesky factor U (U^T U = H^-1), gives
each column's pruning cost w^2 / U_cc^2 and the update that compensates the other
columns. Columns are processed left to right in blocks of `blocksize` (128):

- unstructured: per column block, the floor(rows * B * sparsity) entries with the smallest
  w^2 / U_cc^2 over the whole [rows, B] block are pruned (the reference's adaptive mask
  selection; its `<= threshold` prunes one more entry per block, plus ties; here the count
  is exact and ties go to the lower index, by the engine's selection kernel on the
  equivalent score |w| / U_cc);
- N:M: at the first column of every group of M, the M - N entries of each row with the
  smallest cost among the group's (already updated) weights;
- each column c: the pruned entries' error err = (w - q) / U_cc is spread over the columns
  to its right, W[:, c:] -= err U[c, c:] (lazily per block, as in the reference).

The math is fp32 on a float copy of the weight; the result is written back in the weight's
stored dtype. Inputs that never fire (H_cc = 0) get H_cc = 1 and their weights are zeroed,
as in the reference; dampening adds `damp` x mean(diag H) to the diagonal.

Statistics: the engine accumulates, per group of linears reading the same input tensor
(q/k/v, gate/up), the sum X^T X over the non-padding tokens and the token count
(ops.accumulate_hessian: each batch's product by an fp32 GEMM, added to a float64 sum, so the
total does not depend on batch order or on how batches are split among torchrun ranks, like
the Wanda statistics); H = 2 * sum / count is formed once per group and rounded to fp32 for the
factorisation. Scale does not change the masks or the updates (both depend on ratios of H^-1
entries; dampening is relative), so the exact mean replaces the reference's running rescaling
(H *= n / (n + b); H += 2/n x x^T), which is the same quantity with more rounding.
Why float64 and not fp32 (bench/RESULTS.md, "Hessian accumulation"): an fp32 sum depends on
the order of additions (~4e-7 relative), and SparseGPT's masks amplify that: a near-tie at a
block's selection threshold flips, and the OBS updates carry the flip along the row; with
two torchrun ranks, ~1 flip in 20 matrices on a tiny model. The price is twice the memory of
the sums (8 bytes per entry: 128 MiB for 4096 features), and on CPU a cast and an add of
F^2 entries per batch on top of the GEMM (small next to it when batches hold >= 1-2k tokens).
"""

from __future__ import annotations

import math
import weakref

import torch

from .. import ops
from ..errors import InputError
from .base import PruneMethod

__all__ = ["HessianStats", "SparseGPT", "live_hessian_tensors", "sparsegpt_prune_"]

_LIVE = {"count": 0}  # Hessian-sized tensors alive right now (the sums and their inverse factors)


def _untrack() -> None:
    _LIVE["count"] -= 1


def _track(t: torch.Tensor) -> torch.Tensor:
    """Count t as live until it is garbage collected."""
    _LIVE["count"] += 1
    weakref.finalize(t, _untrack)
    return t


def live_hessian_tensors() -> int:
    """How many Hessian sums or inverse factors are alive (tests check that none outlive their block)."""
    return _LIVE["count"]


class HessianStats:
    """The input Hessian sum of one group of linears that read the same tensor (e.g. q, k, v).

    `hessian`: float64 [F, F], sum over counted tokens of x x^T; `count`: int64 [1] tokens;
    `users`: the linears still to be pruned with it. The inverse factor is computed by the
    first user and shared; both are dropped when the last user is done (one block's worth).
    """

    def __init__(self, features: int, device, names: list[str] | None = None):
        self.hessian: torch.Tensor | None = _track(torch.zeros(features, features, dtype=torch.float64,
                                                               device=device))
        self.count = torch.zeros(1, dtype=torch.int64, device=device)
        self.names: list[str] = list(names or [])
        self.users = len(self.names)
        self._factor: tuple[torch.Tensor, torch.Tensor] | None = None
        self.last_batch = -1  # the batch whose input was last added (shared inputs are added once)

    def inverse_factor(self, damp: float, name: str = "") -> tuple[torch.Tensor, torch.Tensor]:
        """(U, dead): the upper Cholesky factor of the dampened H^-1, and the columns whose
        inputs are always zero. Computed once per group; the sum is freed on the way."""
        if self._factor is None:
            if self.hessian is None:
                raise RuntimeError("the Hessian of this group was already released")
            tokens = int(self.count.item())
            if tokens == 0:
                raise RuntimeError(f"no calibration token reached {name or 'this layer'} (all padding?)")
            h = self.hessian.mul_(2.0 / tokens).float()  # H = 2 X^T X / n, rounded to fp32 once
            self.hessian = None
            diag = h.diagonal()
            dead = diag == 0
            diag[dead] = 1.0
            diag.add_(damp * float(diag.mean()))
            try:
                lower = torch.linalg.cholesky(h)
                del h
                hinv = torch.cholesky_inverse(lower)
                del lower
                upper = torch.linalg.cholesky(hinv, upper=True)
            except torch.linalg.LinAlgError:
                raise RuntimeError(f"SparseGPT: the Hessian of {name or 'a linear'} is not positive definite after "
                                   f"dampening by {damp} x its mean diagonal: raise --sparsegpt-damp") from None
            del hinv
            self._factor = (_track(upper), dead)
        return self._factor

    def done(self) -> None:
        """One user finished; the last one frees the group's tensors."""
        self.users -= 1
        if self.users <= 0:
            self.hessian, self._factor = None, None


def sparsegpt_prune_(weight: torch.Tensor, factor: torch.Tensor, dead: torch.Tensor, *, sparsity: float | None = None,
                     n: int = 0, m: int = 0, blocksize: int = 128) -> int:
    """Prune `weight` ([out, in] view, any dtype and strides) in place with SparseGPT's OBS updates,
    given U (upper Cholesky factor of the dampened H^-1) and the dead-input columns. Returns
    the number of pruned entries (dead columns are zeroed too, counted only when selected)."""
    rows, cols = weight.shape
    device = weight.device
    w = weight.to(dtype=torch.float32, memory_format=torch.contiguous_format, copy=True)
    w[:, dead] = 0
    mask = torch.zeros(rows, cols, dtype=torch.bool, device=device)
    inv_diag = 1.0 / factor.diagonal()  # score |w| / U_cc orders like the paper's w^2 / U_cc^2
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        width = i2 - i1
        # The block transposed, [B, rows]: the column loop then reads and updates contiguous rows.
        w1 = w[:, i1:i2].t().contiguous()
        err1 = torch.empty_like(w1)
        u1 = factor[i1:i2, i1:i2]
        mask1 = torch.zeros(width, rows, dtype=torch.bool, device=device)
        if not m:  # the whole block at once: exactly floor(rows * B * s) entries, ties in row-major order
            flat = torch.zeros(rows, width, dtype=torch.bool, device=device)
            scores = w[:, i1:i2].reshape(1, -1).clone()  # a copy: prune_rows_ zeroes it
            ops.prune_rows_(scores, inv_diag[i1:i2].repeat(rows), sparsity=sparsity, mask_out=flat.view(1, -1))
            mask1.copy_(flat.t())
        keep = (~mask1).to(torch.float32)
        for i in range(width):
            if m and i % m == 0:  # this group, from its weights as updated so far
                scale = inv_diag[i1 + i:i1 + i + m].contiguous()
                ops.prune_rows_(w1[i:i + m].t().clone(), scale, n=n, m=m, mask_out=mask1[i:i + m].t())
                keep[i:i + m] = (~mask1[i:i + m]).to(torch.float32)
            err = err1[i]
            torch.mul(w1[i], 1.0 - keep[i], out=err)  # w - q: the pruned entries, 0 elsewhere
            err.div_(u1[i, i])
            # column i becomes q; the block's later columns compensate (a rank-1 GEMM: addmm is BLAS,
            # addr_ or a broadcast product ran 40-150x slower on CPU)
            w1[i:].addmm_(u1[i, i:, None], err[None, :], alpha=-1.0)
        w1.masked_fill_(mask1, 0.0)  # exact zeros
        w[:, i1:i2] = w1.t()
        mask[:, i1:i2] = mask1.t()
        if i2 < cols:
            w[:, i2:].addmm_(err1.t(), factor[i1:i2, i2:], alpha=-1.0)
    weight.copy_(w)
    return int(mask.sum())


class SparseGPT(PruneMethod):
    """SparseGPT (Frantar & Alistarh, 2023): OBS mask selection and weight reconstruction, one
    block of `blocksize` columns at a time, from the input Hessian of the base buckets."""

    name = "sparsegpt"

    def __init__(self, *, base_buckets: list[str] | None = None, damp: float = 0.01, blocksize: int = 128):
        super().__init__(base_buckets=base_buckets)
        if isinstance(damp, bool) or not isinstance(damp, (int, float)) or not math.isfinite(damp) or damp <= 0:
            raise InputError(f"--sparsegpt-damp must be a positive fraction of the mean diagonal, got {damp!r}")
        if isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize < 1:
            raise InputError(f"--sparsegpt-blocksize must be a positive integer, got {blocksize!r}")
        self.damp, self.blocksize = float(damp), blocksize

    @classmethod
    def create(cls, *, base_buckets: list[str] | None = None, sparsegpt_damp: float = 0.01,
               sparsegpt_blocksize: int = 128) -> SparseGPT:
        return cls(base_buckets=base_buckets, damp=sparsegpt_damp, blocksize=sparsegpt_blocksize)

    def collect_statistics(self, block_stats) -> dict:
        """A HessianStats per linear (shared by the linears that read the same input), over the base buckets."""
        return block_stats.hessians(self.base_buckets)

    def bucket_groups(self):
        return [None]  # the Hessian already sums the base buckets only (engine/hessian.py)

    def check_pattern(self, n: int, m: int) -> None:
        """N:M groups must not straddle two column blocks."""
        if m and self.blocksize % m:
            raise InputError(f"--sparsegpt-blocksize {self.blocksize} is not a multiple of M={m}: "
                             f"the {n}:{m} groups would straddle column blocks")

    def prune_(self, weight, stats, *, sparsity=None, n=0, m=0, name="", protect=None):
        if protect is not None:
            raise RuntimeError("sparsegpt protects no columns")
        if not isinstance(stats, HessianStats):
            raise RuntimeError(f"sparsegpt needs the input Hessian of {name or 'this matrix'}")
        self.check_pattern(n, m)
        factor, dead = stats.inverse_factor(self.damp, name)
        try:
            return sparsegpt_prune_(weight, factor.to(weight.device), dead.to(weight.device), sparsity=sparsity,
                                    n=n, m=m, blocksize=self.blocksize)
        finally:
            del factor, dead
            stats.done()

    def describe(self):
        return {**super().describe(), "damp": self.damp, "blocksize": self.blocksize,
                "hessian": "2 X^T X / n over non-padding tokens (float64 sums, fp32 factorisation), one per group of "
                           "linears sharing an input"}
