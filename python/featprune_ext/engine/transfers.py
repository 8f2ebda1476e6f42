"""Host <-> device copies of a block's weights on CUDA, each on a stream of its own so it overlaps compute.

to_device: a block the prefetch thread read (into pinned memory) goes up on the copy stream; the
compute stream waits on the returned event before the block runs.
to_host: the pruned matrices come down into pinned memory on the d2h stream, after the pruning
kernels; the writer waits on the returned event before it writes them (a synchronous copy cost the
main thread a 7B block's 400 MB at PCIe speed, every block).
with_index: "cuda" -> "cuda:N" (some torch.cuda calls refuse a device without an index).
"""

from __future__ import annotations

import torch

__all__ = ["to_device", "to_host", "with_index"]


def with_index(device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def to_device(tensors: dict, device: torch.device, stream) -> tuple[dict, torch.cuda.Event]:
    with torch.cuda.stream(stream):
        tensors = {k: t.to(device, non_blocking=True) for k, t in tensors.items()}
        event = torch.cuda.Event()
        event.record(stream)
    return tensors, event


def _pinned_like(t: torch.Tensor) -> torch.Tensor:
    return torch.empty(t.shape, dtype=t.dtype, pin_memory=True)  # pageable memory would make the copy synchronous


def to_host(entries: list, device: torch.device, stream) -> torch.cuda.Event:
    """Replace the (key, device tensor) entries by (key, pinned host copy), in place."""
    stream.wait_stream(torch.cuda.current_stream(device))  # after the pruning kernels
    with torch.cuda.stream(stream):
        for j, (key, t) in enumerate(entries):
            host = _pinned_like(t)
            host.copy_(t, non_blocking=True)
            t.record_stream(stream)  # the allocator must not hand t's memory out before the copy ran
            entries[j] = (key, host)
        done = torch.cuda.Event()
        done.record(stream)
    return done
