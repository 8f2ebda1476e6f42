"""Attention masks and the SDPA call, as transformers builds them for a prefill without a cache.

The mask is None exactly when transformers' SDPA path lets `is_causal` stand in for it (no
padding, and a sliding window no shorter than the sequence); otherwise a [batch, 1, L, L] boolean
mask (True: attend). Which of the two SDPA gets changes its kernel, hence its rounding, so the
choice follows transformers' rules, not just the mask's values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["sdpa_attention", "sdpa_bool_mask"]


def sdpa_bool_mask(attention_mask: torch.Tensor, window: int | None = None) -> torch.Tensor | None:
    """attention_mask: [batch, L] (1 = token, 0 = padding). window: sliding-window length or None."""
    padding = attention_mask.to(torch.bool)
    batch, length = padding.shape
    if (window is None or length < window) and int(padding.sum()) == padding.numel():
        return None
    device = padding.device
    q = torch.arange(length, device=device)[None, None, :, None]
    kv = torch.arange(length, device=device)[None, None, None, :]
    allowed = kv <= q
    if window is not None:
        allowed = allowed & (kv > q - window)
    allowed = allowed & padding[torch.arange(batch, device=device)[:, None, None, None], kv]
    return allowed.expand(batch, -1, length, length)


def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, heads, length, dim = x.shape
    return x[:, :, None].expand(b, heads, groups, length, dim).reshape(b, heads * groups, length, dim)


def sdpa_attention(q, k, v, mask: torch.Tensor | None, scaling: float, groups: int) -> torch.Tensor:
    """Grouped-query attention through torch's SDPA; q [b, heads, L, d], k and v [b, kv_heads, L, d];
    returns [b, L, heads, d]. Without a mask SDPA groups the heads itself (`enable_gqa`); with one,
    k and v are repeated per group first, and a single query position attends un-causally."""
    length = q.shape[2]
    extra = {}
    if groups > 1:
        if mask is None and k.shape[-1] == v.shape[-1] <= 256:
            extra["enable_gqa"] = True
        elif length == 1:  # one query: the group on the query axis (the mask's one head row serves all)
            q = q.reshape(q.shape[0], q.shape[1] // groups, groups, q.shape[-1])
        else:
            k, v = _repeat_kv(k, groups), _repeat_kv(v, groups)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, scale=scaling,
                                         is_causal=length > 1 and mask is None, **extra)
    out = out.reshape(out.shape[0], -1, length, v.shape[-1])
    return out.transpose(1, 2).contiguous()
