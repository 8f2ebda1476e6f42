"""Scores that decide what structured pruning removes, from the statistics the engine streams.

- MLP channel j (an input feature of down_proj): `wanda` = ||X_j||_2 * ||W_down[:, j]||_2, with ||X_j||
  from the per-feature sums of squares engine/stats.py collects (the RMS orders channels the same way);
  `magnitude` = ||W_down[:, j]||_2 alone, the baseline that sees no activation.
- Key/value group g: the query heads sharing it own a contiguous slice of o_proj's input features; the
  group's score is the Frobenius norm of those features' scores, sqrt(sum_f (||X_f|| * ||W_o[:, f]||)^2).
- Block: ShortGPT's block influence, 1 - cosine(input, output) per non-padding token, averaged.

Every choice removes the same count in every block and breaks ties by index: among equal scores the
lower index is removed first, so a choice never depends on sort internals.
"""

from __future__ import annotations

import torch

__all__ = ["SCORES", "BlockInfluence", "channel_scores", "choose_blocks", "group_scores", "keep_lowest_removed",
           "rms_from_sums"]

SCORES = ("wanda", "magnitude")


def _check_score(score: str) -> None:
    if score not in SCORES:
        raise ValueError(f"unknown structured score {score!r}; choose from {', '.join(SCORES)}")


def rms_from_sums(sumsq: torch.Tensor, count) -> torch.Tensor:
    """sqrt(mean x^2) per feature (float64) from per-bucket sums [K, F] (or [F]) and token counts."""
    sums = sumsq.double().reshape(-1, sumsq.shape[-1]).sum(dim=0)
    tokens = int(torch.as_tensor(count).sum())
    if tokens == 0:
        raise RuntimeError("no calibration token reached this layer (all padding?)")
    return (sums / tokens).sqrt()


def _feature_scores(weight: torch.Tensor, rms: torch.Tensor | None, score: str) -> torch.Tensor:
    """Per input feature of a consumer matrix `weight` [out, in]: ||W[:, f]|| (times ||X_f|| for wanda), float64."""
    _check_score(score)
    norms = weight.double().norm(dim=0)
    if score == "magnitude":
        return norms
    if rms is None:
        raise ValueError("the wanda score needs the input statistics of the consumer matrix")
    return norms * rms.double().to(norms.device)


def channel_scores(down_weight: torch.Tensor, rms: torch.Tensor | None, score: str = "wanda") -> torch.Tensor:
    """Score of each MLP channel (input feature of down_proj [hidden, inter]), float64 [inter]."""
    return _feature_scores(down_weight, rms, score)


def group_scores(o_weight: torch.Tensor, rms: torch.Tensor | None, num_kv_heads: int, score: str = "wanda") \
        -> torch.Tensor:
    """Score of each key/value group from o_proj [hidden, heads * head_dim] and its input RMS, float64 [kv]."""
    per_feature = _feature_scores(o_weight, rms, score)
    if per_feature.numel() % num_kv_heads:
        raise ValueError(f"o_proj has {per_feature.numel()} inputs, not a multiple of {num_kv_heads} groups")
    return per_feature.reshape(num_kv_heads, -1).square().sum(dim=1).sqrt()


def keep_lowest_removed(scores: torch.Tensor, remove: int) -> torch.Tensor:
    """Indices kept (ascending, int64) after removing the `remove` lowest scores; ties: lower index removed."""
    n = scores.numel()
    if not 0 <= remove < n:
        raise ValueError(f"cannot remove {remove} of {n}")
    order = sorted(range(n), key=lambda i: (float(scores[i]), i))
    removed = set(order[:remove])
    return torch.tensor([i for i in range(n) if i not in removed], dtype=torch.int64)


class BlockInfluence:
    """ShortGPT's block influence, accumulated batch by batch: mean over non-padding tokens of
    1 - cos(block input, block output). Sums in float64, so the order of batches does not matter."""

    def __init__(self):
        self.total = 0.0
        self.tokens = 0

    def add(self, hidden_in: torch.Tensor, hidden_out: torch.Tensor, mask: torch.Tensor) -> None:
        keep = mask.reshape(-1).to(hidden_in.device)
        x = hidden_in.reshape(-1, hidden_in.shape[-1])[keep].double()
        y = hidden_out.reshape(-1, hidden_out.shape[-1])[keep].double()
        cos = (x * y).sum(dim=1) / (x.norm(dim=1) * y.norm(dim=1)).clamp_min(1e-30)
        self.total += float((1.0 - cos).sum())
        self.tokens += int(keep.sum())

    @property
    def value(self) -> float:
        if self.tokens == 0:
            raise RuntimeError("no calibration token reached this block (all padding?)")
        return self.total / self.tokens


def choose_blocks(influence: list[float], count: int) -> list[int]:
    """The `count` blocks of lowest influence (ascending index); ties: the lower index is removed first."""
    if not 0 <= count < len(influence):
        raise ValueError(f"cannot remove {count} of {len(influence)} blocks")
    order = sorted(range(len(influence)), key=lambda i: (influence[i], i))
    return sorted(order[:count])
