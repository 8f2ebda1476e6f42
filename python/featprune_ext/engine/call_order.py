"""Stop a statistics pass once the block's last prunable linear has its input.

The statistics passes (stats.py, hessian.py) need the linears' inputs, not the block's output (the
pruned pass computes that). So once the last linear of a dense block has received its input, the
rest of the block (that linear's own GEMM, e.g. the MLP's down projection, and the norms and
residual after it) is skipped by raising InputsSeen from its hook: about a fifth of the pass.

The call order is learnt on a batch that ran to the end and in which every linear was called
exactly once; a later batch stops early only when its calls so far repeat that order exactly, so
no linear can miss an input. Blocks that call a linear twice, or route tokens to experts (MoE: the
order depends on the data), never learn an order and always run whole.
"""

from __future__ import annotations

__all__ = ["CallOrder", "InputsSeen", "call_orders_for_run"]


class InputsSeen(Exception):
    """Raised from the last linear's hook: every input of this batch is in."""


def call_orders_for_run(early_stop: bool = True) -> dict | None:
    """The learnt orders, shared by every block of one run; None (Tuning.stats_early_stop False) runs
    every batch to the block's end, the behaviour before this lever (for A/B measurements)."""
    return {} if early_stop else None


class CallOrder:
    """The calls of one statistics pass over one block. `orders` is call_orders_for_run()'s dict
    (blocks of one class with the same linears share an order) or None (never stop)."""

    def __init__(self, orders: dict | None, block, names: list[str]):
        self.orders = orders
        self.key = (type(block).__qualname__, tuple(names))
        self.names = sorted(names)
        self.start_batch()

    def start_batch(self) -> None:
        self.seen: list[str] = []
        self.routed = False
        self.order = None if self.orders is None else self.orders.get(self.key)

    def saw(self, name: str, routed: bool) -> None:
        """Record a linear's input; raises InputsSeen when it completes the learnt order."""
        self.seen.append(name)
        self.routed |= routed
        if self.order is not None and len(self.seen) == len(self.order) and self.seen == self.order:
            raise InputsSeen

    def end_batch(self) -> None:
        """After a batch that ran to the end: learn its order if every linear was called exactly once."""
        if self.orders is not None and self.key not in self.orders and not self.routed \
                and sorted(self.seen) == self.names:
            self.orders[self.key] = list(self.seen)
