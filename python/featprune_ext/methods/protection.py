"""Outlier-column protection (Kim et al., 2024; LLM.int8()'s 6.0 threshold): columns of the
matrices that read the hidden state that are never pruned."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError

__all__ = ["READS_HIDDEN_STATE", "OutlierProtection", "reads_hidden_state"]

# Last name component of the matrices whose input is the residual-stream hidden state (they
# follow a layer norm). Outlier features live there; o_proj/down_proj read other spaces.
READS_HIDDEN_STATE = frozenset({
    "q_proj", "k_proj", "v_proj", "qkv_proj", "W_pack", "query_key_value", "query", "key", "value",
    "gate_proj", "up_proj", "gate_up_proj", "c_attn", "c_fc", "fc1", "dense_h_to_4h", "w1", "w3",
})


def reads_hidden_state(matrix_name: str) -> bool:
    """True for matrices that read the hidden state, from their parameter or module name."""
    parts = matrix_name.split(".")
    if parts and parts[-1] in ("weight", "bias"):
        parts = parts[:-1]
    return bool(parts) and parts[-1] in READS_HIDDEN_STATE


@dataclass
class OutlierProtection:
    """Columns never pruned: the top `top_percent`% input features by RMS, and those whose max |x|
    reaches `absmax_threshold` (LLM.int8() used 6.0), in matrices that read the hidden state."""

    top_percent: float = 0.0
    absmax_threshold: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.top_percent < 100.0:
            raise InputError(f"--protect-top must be a percentage in [0, 100), got {self.top_percent}")
        if self.absmax_threshold is not None and not self.absmax_threshold > 0:
            raise InputError(f"--protect-absmax must be > 0, got {self.absmax_threshold}")

    @property
    def active(self) -> bool:
        return self.top_percent > 0 or self.absmax_threshold is not None

    def columns(self, rms: torch.Tensor, absmax: torch.Tensor) -> torch.Tensor:
        protect = torch.zeros_like(rms, dtype=torch.bool)
        top = int(rms.numel() * self.top_percent / 100.0)
        if top > 0:
            protect[torch.topk(rms, top).indices] = True
        if self.absmax_threshold is not None:
            protect |= absmax >= self.absmax_threshold
        return protect

    def describe(self) -> dict:
        return {"top_percent": self.top_percent, "absmax_threshold": self.absmax_threshold}
