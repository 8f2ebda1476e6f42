"""Capture, generically, the arguments every block is called with (masks, rotary or alibi
position encodings, cache positions, ...): one forward pass with recording stand-ins in place
of the blocks, per layer and per batch, whatever the family."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .batches import Batch

__all__ = ["BlockCall", "capture_block_calls"]


class _Stop(Exception):
    pass


@dataclass
class BlockCall:
    """How one block is called on one batch: block(hidden, *args, **kwargs) or with
    hidden_states=... as a keyword when the model passes it that way."""

    args: tuple
    kwargs: dict
    hidden_as_kwarg: bool

    def run(self, block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        if self.hidden_as_kwarg:
            out = block(*self.args, hidden_states=hidden, **self.kwargs)
        else:
            out = block(hidden, *self.args, **self.kwargs)
        return out[0] if isinstance(out, (tuple, list)) else out


class _Recorder(nn.Module):
    """Stands in for block `idx`: records its call, passes the hidden states through unchanged
    in the container the model expects (a tensor, or a tuple for e.g. BLOOM), and checks that
    the next stand-in received exactly what this one returned."""

    def __init__(self, idx: int, state: dict):
        super().__init__()
        self.idx = idx
        self.state = state

    def forward(self, *args, **kwargs):
        st = self.state
        if args:
            hidden, rest, as_kw = args[0], args[1:], False
        else:
            hidden, rest, as_kw = kwargs.pop("hidden_states"), (), True
        prev = st["returned"]
        if prev is not None and not (isinstance(hidden, torch.Tensor) and hidden.shape == prev.shape
                                     and (hidden is prev or torch.equal(hidden, prev))):
            st["mismatch"] = True
            raise _Stop
        st["calls"][self.idx] = BlockCall(rest, kwargs, as_kw)
        if self.idx == 0:
            st["first_hidden"] = hidden
        if self.idx == st["last"]:
            raise _Stop
        st["returned"] = hidden
        return (hidden,) if st["tuple"] else hidden


def capture_block_calls(model: nn.Module, blocks: nn.ModuleList, batches: list[Batch], device) \
        -> tuple[list[list[BlockCall]], list[torch.Tensor]]:
    """Run the model with recorders in place of its blocks: per layer, per batch, the call each
    block gets; plus the first block's input hidden states per batch."""
    real = list(blocks)
    state: dict[str, Any] = {"tuple": False, "last": len(real) - 1}
    calls: list[list[BlockCall]] = [[] for _ in real]
    firsts: list[torch.Tensor] = []
    try:
        for i in range(len(real)):
            blocks[i] = _Recorder(i, state)
        for b, batch in enumerate(batches):
            for attempt in range(2):
                state.update(returned=None, mismatch=False, calls=[None] * len(real), first_hidden=None)
                try:
                    model(input_ids=batch.ids.to(device), attention_mask=batch.mask.to(device=device, dtype=torch.long),
                          use_cache=False)
                except _Stop:
                    pass
                if not state["mismatch"]:
                    break
                if b > 0 or attempt > 0:
                    raise RuntimeError(f"could not pass hidden states through the blocks of {type(model).__name__}: "
                                       "they are neither a tensor nor a tuple starting with one")
                state["tuple"] = True  # the model unpacks block outputs (outputs[0]): retry with tuples
            if any(c is None for c in state["calls"]):
                missing = [i for i, c in enumerate(state["calls"]) if c is None]
                raise RuntimeError(f"blocks {missing} of {type(model).__name__} were never called during capture")
            for i, c in enumerate(state["calls"]):
                calls[i].append(c)
            firsts.append(state["first_hidden"])
    finally:
        for i, block in enumerate(real):
            blocks[i] = block
    return calls, firsts
