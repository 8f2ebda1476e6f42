"""Calibration samples -> right-padded batches, and the sparsity/pattern check every entry point shares."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.calibration_set import CalibrationSet
from ..errors import InputError
from .transfers import with_index

__all__ = ["AUTO", "Batch", "COMPUTE_DTYPES", "auto_batch_size", "available_memory_bytes", "make_batches",
           "pad_id_for", "parse_batch_size", "parse_dtype", "validate_pattern"]


AUTO = "auto"
# --batch-size auto: samples per batch such that the batch-dependent activations of one block's forward
# pass stay under AUTO_MEMORY_FRACTION of the memory available, and no more than AUTO_MAX_TOKENS tokens
# per batch (beyond that, batching stops paying: the matrix products are already large enough, and on
# CPU larger batches measured slower: their activations no longer stay in cache; bench/RESULTS.md).
AUTO_MEMORY_FRACTION = 0.25
AUTO_MAX_TOKENS = {"cpu": 2048, "cuda": 16384}


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
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
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


def parse_batch_size(value) -> int | str:
    """A positive int or "auto"; InputError otherwise."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"batch_size must be a positive integer or 'auto', got {value!r}")
    return value


def available_memory_bytes(device: torch.device) -> int:
    """Memory this process may still use on `device`: free device memory (under a per-process
    fraction, if one is set), or for the CPU MemAvailable, lowered to the cgroup's limit if any."""
    device = with_index(device)  # get_per_process_memory_fraction refuses "cuda" without an index
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        get_fraction = getattr(torch.cuda, "get_per_process_memory_fraction", None)
        if get_fraction is not None:
            allowed = int(total * get_fraction(device)) - torch.cuda.memory_reserved(device)
            free = min(free, max(allowed, 0))
        return int(free)
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    limit = _cgroup_room()
    if avail is None:
        avail = limit if limit is not None else 4 << 30
    return int(min(avail, limit) if limit is not None else avail)


def _cgroup_room() -> int | None:
    """limit - usage of this process's memory cgroup (v2 or v1), or None when unlimited/unknown."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if controllers == "":  # v2
            base = Path("/sys/fs/cgroup") / rel.lstrip("/")
            files = ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):
            base = Path("/sys/fs/cgroup/memory") / rel.lstrip("/")
            files = ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        try:
            raw = (base / files[0]).read_text().strip()
            if raw == "max" or int(raw) >= 1 << 60:
                return None
            return max(int(raw) - int((base / files[1]).read_text().strip()), 0)
        except (OSError, ValueError):
            return None
    return None


def auto_batch_size(calibration: CalibrationSet, token_bytes: int, position_bytes: int, device: torch.device,
                    world_size: int = 1, available: int | None = None) -> int:
    """Samples per batch for --batch-size auto.

    token_bytes: activation bytes a block's forward keeps per token (its matrices' outputs plus a few
    hidden-sized temporaries); position_bytes: bytes per token *per position of the batch* (attention
    scores when the kernel materialises them). Batches are padded to their longest sample, so the longest
    sample sizes them. Padding stays masked out of the statistics whatever the batch size.
    """
    device = torch.device(device)
    length = calibration.max_len
    per_sample = length * (token_bytes + position_bytes * length)
    budget = (available_memory_bytes(device) if available is None else available) * AUTO_MEMORY_FRACTION
    by_memory = int(budget // max(per_sample, 1))
    by_tokens = AUTO_MAX_TOKENS.get(device.type, AUTO_MAX_TOKENS["cpu"]) // length
    per_bucket = [sum(1 for b in calibration.buckets if b == k) for k in range(len(calibration.bucket_names))]
    size = max(1, min(by_memory, by_tokens, max(per_bucket)))
    while size > 1 and sum(math.ceil(n / size) for n in per_bucket if n) < world_size:
        size -= 1  # every rank needs at least one batch
    return size


def block_activation_bytes(block, config, dtype: torch.dtype) -> tuple[int, int]:
    """(token_bytes, position_bytes) of auto_batch_size for one block: every matrix's output plus four
    hidden-sized temporaries per token in `dtype`, and one fp32 attention score per head and position."""
    from .families import prunable_linears

    linears = prunable_linears(block)
    if not linears:
        return 0, 0
    elem = torch.empty((), dtype=dtype).element_size()
    outs = sum(pl.module.weight.shape[1 if pl.transposed else 0] for pl in linears)
    hidden = linears[0].in_features
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = next((int(v) for k in ("num_attention_heads", "n_head", "num_heads", "attention_heads")
                  if isinstance(v := getattr(text, k, None), int)), 1)
    return elem * (outs + 4 * hidden), 4 * heads


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


COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(dtype) -> torch.dtype | None:
    """None, a torch dtype or its name ("bfloat16", "float16", "float32") -> a floating torch dtype."""
    if dtype is None or isinstance(dtype, torch.dtype):
        found = dtype
    else:
        found = COMPUTE_DTYPES.get(str(dtype).replace("torch.", ""))
    if found is not None and found not in COMPUTE_DTYPES.values():
        found = None
    if dtype is not None and found is None:
        raise InputError(f"dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {dtype!r}")
    return found
