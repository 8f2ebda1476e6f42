"""Which experts to remove, and where each language's tokens are routed.

REAP-style saliency of expert e: the mean, over the non-padding calibration tokens the router sends to e,
of (routing weight of e) x ||e's output||_2. An expert no token reached scores 0 and goes first (ties:
the lower index). The routing report counts, per calibration bucket (a language's demonstrations), how
many tokens each expert receives.

In the streaming engine the experts run one by one as engine/moe.py's UnfusedExperts; `watch_experts`
hooks one such module and feeds both accumulators from exactly what it computes.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["ExpertSaliency", "RoutingCounts", "routing_report", "watch_experts"]


class ExpertSaliency:
    """Running REAP saliency of one MoE block's experts (float64 sums, order-independent)."""

    def __init__(self, num_experts: int):
        self.sums = torch.zeros(num_experts, dtype=torch.float64)
        self.tokens = torch.zeros(num_experts, dtype=torch.int64)

    def add(self, expert: int, weights: torch.Tensor, outputs: torch.Tensor) -> None:
        """`weights` [T]: routing weights of the counted tokens sent to `expert`; `outputs` [T, hidden]: its
        outputs on them, before the routing weight scales them."""
        norms = outputs.double().norm(dim=-1)
        self.sums[expert] += float((weights.double().to(norms.device) * norms).sum())
        self.tokens[expert] += int(weights.numel())

    def scores(self) -> torch.Tensor:
        return torch.where(self.tokens > 0, self.sums / self.tokens.clamp_min(1).double(), torch.zeros_like(self.sums))


class RoutingCounts:
    """Tokens routed to each expert per calibration bucket, [buckets, experts] (each top-k slot counts)."""

    def __init__(self, num_experts: int, bucket_names: list[str]):
        self.bucket_names = list(bucket_names)
        self.counts = torch.zeros(len(bucket_names), num_experts, dtype=torch.int64)
        self.tokens = torch.zeros(len(bucket_names), dtype=torch.int64)

    def add(self, bucket: int, top_k_index: torch.Tensor, mask: torch.Tensor) -> None:
        keep = mask.reshape(-1).to(top_k_index.device)
        chosen = top_k_index.reshape(keep.numel(), -1)[keep].reshape(-1).cpu()
        self.counts[bucket] += torch.bincount(chosen, minlength=self.counts.shape[1])
        self.tokens[bucket] += int(keep.sum())


def routing_report(per_block: list[RoutingCounts], top: int = 4) -> list[dict]:
    """Per block, per bucket: its counted tokens and the `top` experts by share of its routing slots."""
    report = []
    for counts in per_block:
        entry = {}
        for b, name in enumerate(counts.bucket_names):
            row = counts.counts[b]
            total = int(row.sum())
            order = sorted(range(row.numel()), key=lambda e: (-int(row[e]), e))[:top]
            entry[name] = {"tokens": int(counts.tokens[b]),
                           "top_experts": [[e, round(int(row[e]) / total, 4) if total else 0.0] for e in order]}
        report.append(entry)
    return report


@contextlib.contextmanager
def watch_experts(unfused, saliency: ExpertSaliency | None, routing: RoutingCounts | None, current: dict):
    """Hook an engine/moe.py UnfusedExperts: every call adds to `saliency` and `routing`. `current` holds the
    batch's token "mask" [B, T] (True = counted) and "bucket", as the statistics pass keeps them."""
    state: dict = {}

    def pre(module, args, kwargs):
        hidden, top_k_index, top_k_weights = (list(args) + [kwargs.get(k) for k in
                                                            ("hidden_states", "top_k_index", "top_k_weights")])[:3]
        state.update(index=top_k_index, weights=top_k_weights, counted=current["mask"].reshape(-1))
        if routing is not None:
            routing.add(current["bucket"], top_k_index, current["mask"])

    def after_down(e):
        def hook(module, args, output):
            tok = module.token_index
            pos, tok2 = torch.where(state["index"].t() == e)  # the order UnfusedExperts walks them in
            if tok is None or not torch.equal(tok, tok2):
                raise RuntimeError(f"expert {e}: routed tokens do not match the router's choice")
            counted = state["counted"].to(tok.device)[tok]
            if saliency is not None and bool(counted.any()):
                saliency.add(e, state["weights"][tok[counted], pos[counted]], output[counted])
        return hook

    handles = [unfused.register_forward_pre_hook(pre, with_kwargs=True)]
    for e in range(unfused.num_experts):
        expert = unfused._modules[str(e)]
        handles.append(expert._modules[expert.down_leaf].register_forward_hook(after_down(e)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
