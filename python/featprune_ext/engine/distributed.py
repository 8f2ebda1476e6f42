"""Data-parallel calibration over torch.distributed (launched by torchrun).

Every rank streams the same block from the shared checkpoint, runs its share of the
calibration batches, and the per-feature statistics are combined with all_reduce
(sum of squares and token counts: SUM; absmax: MAX). All ranks then hold identical
statistics, derive identical masks with the deterministic kernels, and rank 0 alone
writes the output.

Why the masks match a single-process run bit for bit: each batch's sum of squares is
computed by the kernel into a fresh fp32 buffer and folded into a float64 total. Sums
of non-negative fp32 values in float64 are exact while one feature's batch partials
span less than 2^29 in magnitude (always, in practice), so the total does not depend
on which rank summed which batch or in what order. Beyond that range the difference is
float64 rounding (~1e-16 relative), invisible after the fp32 cast of col_scale except
for values sitting exactly on an fp32 rounding boundary.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch

__all__ = ["DistContext", "init_distributed", "launched_by_torchrun"]


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


@dataclass
class DistContext:
    """This process's place in the job; a single-process run is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def batch_indices(self, num_batches: int) -> list[int]:
        """This rank's batches: a fixed round-robin split, the same on every run."""
        return list(range(self.rank, num_batches, self.world_size))

    def all_reduce_(self, sums: list[torch.Tensor], maxima: list[torch.Tensor]) -> None:
        """In place: SUM over ranks for `sums`, MAX for `maxima` (one collective per list)."""
        if not self.enabled:
            return
        import torch.distributed as dist

        for tensors, op in ((sums, dist.ReduceOp.SUM), (maxima, dist.ReduceOp.MAX)):
            if not tensors:
                continue
            # one flat buffer per dtype: fewer collectives than one per tensor
            by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
            for t in tensors:
                by_dtype.setdefault(t.dtype, []).append(t)
            for group in by_dtype.values():
                if len(group) == 1 and group[0].is_contiguous():  # in place: no copy (e.g. a Hessian)
                    dist.all_reduce(group[0], op=op)
                    continue
                flat = torch.cat([t.reshape(-1) for t in group])
                dist.all_reduce(flat, op=op)
                offset = 0
                for t in group:
                    t.copy_(flat[offset:offset + t.numel()].view_as(t))
                    offset += t.numel()

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def broadcast_object(self, obj):
        """rank 0's value of obj on every rank (e.g. whether a resume point exists)."""
        if not self.enabled:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def shutdown(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def init_distributed(device: str, timeout_s: float = 1800.0) -> DistContext:
    """Join the torchrun job (NCCL for CUDA, gloo for CPU); a no-op single context otherwise.

    A rank that dies makes the others fail at the next collective (within `timeout_s`)
    instead of hanging forever; no rank then marks the output complete.
    """
    if not launched_by_torchrun():
        return DistContext()
    import torch.distributed as dist

    backend = "nccl" if device.startswith("cuda") else "gloo"
    if device.startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), backend=backend)
