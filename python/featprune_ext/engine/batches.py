"""Calibration samples -> right-padded batches, and the sparsity/pattern check every entry point shares."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.calibration_set import CalibrationSet
from ..errors import InputError

__all__ = ["Batch", "make_batches", "pad_id_for", "validate_pattern"]


@dataclass
class Batch:
    ids: torch.Tensor  # int64 [B, T], right-padded
    mask: torch.Tensor  # bool [B, T]: True for real tokens
    bucket: int


def make_batches(calibration: CalibrationSet, batch_size: int, pad_id: int) -> list[Batch]:
    """Samples grouped by bucket (one accumulate_stats bucket per batch), longest first, right-padded.

    Right padding keeps every real token at its natural position and, with causal attention,
    no real token attends to a pad; the pads themselves are masked out of the statistics.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    batches = []
    for bucket in range(len(calibration.bucket_names)):
        members = [s for s, b in zip(calibration.samples, calibration.buckets) if b == bucket]
        if batch_size > 1:  # similar lengths together: less padding to compute and discard
            members.sort(key=lambda s: -s.numel())
        for start in range(0, len(members), batch_size):
            chunk = members[start:start + batch_size]
            length = max(s.numel() for s in chunk)
            ids = torch.full((len(chunk), length), pad_id, dtype=torch.int64)
            mask = torch.zeros((len(chunk), length), dtype=torch.bool)
            for row, s in enumerate(chunk):
                ids[row, :s.numel()] = s
                mask[row, :s.numel()] = True
            batches.append(Batch(ids, mask, bucket))
    return batches


def validate_pattern(sparsity, pattern) -> tuple[float | None, tuple[int, int] | None]:
    """Normalise (sparsity, pattern); InputError on anything out of range."""
    if pattern is not None:
        if isinstance(pattern, str):
            try:
                n, m = (int(v) for v in pattern.split(":"))
            except ValueError:
                raise InputError(f"pattern must look like N:M (e.g. 2:4), got {pattern!r}") from None
        else:
            n, m = pattern
        if not (0 <= n < m <= 64):
            raise InputError(f"N:M pattern needs 0 <= N < M <= 64, got {n}:{m}")
        implied = 1 - n / m
        if sparsity is not None and abs(sparsity - implied) > 1e-9:
            raise InputError(f"sparsity {sparsity} disagrees with pattern {n}:{m} (which prunes {implied:g})")
        return None, (n, m)
    if sparsity is None:
        raise InputError("give a sparsity (e.g. 0.5) or an N:M pattern (e.g. 2:4)")
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity < 1.0:
        raise InputError(f"sparsity must be in [0, 1), got {sparsity!r}")
    return float(sparsity), None


def pad_id_for(config, vocab_size: int) -> int:
    """The id used to pad batches: the model's pad token when it is a valid row of the
    embedding, else 0. Padding never reaches the statistics (it is masked), so any valid id works."""
    pad_id = config.get_text_config().pad_token_id
    return pad_id if isinstance(pad_id, int) and 0 <= pad_id < vocab_size else 0
