"""Options of structured pruning's scores and recovery: one typed set, validated once, shared by the
in-memory pruner, the streaming engine and the CLI (settings.StructuredSettings fills it)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from .recovery import RECOVERIES
from .scores import SCORES
from .spec import StructuredPlan

__all__ = ["AUTO_STEPS", "Options", "TARGETS"]

TARGETS = ("model", "block")
AUTO_STEPS = (80, 160)  # measured: bench/results_structured.md, "What got the recovery there"


@dataclass(frozen=True)
class Options:
    """The defaults are the arm that measured best on held-out text (bench/results_structured.md)."""

    score: str = "wanda"  # channel/group score: scores.SCORES
    recovery: str = "adam"  # recovery.RECOVERIES
    damp: float = 0.01  # least-squares ridge, x mean diagonal of the kept Gram
    # Adam steps per cut module; None: about 8 passes over the kept tokens, within AUTO_STEPS (`steps_for`):
    # more calibration tokens support more steps before the fit learns the calibration text itself
    adam_steps: int | None = None
    adam_lr: float = 0.01  # the peak step, x each tensor's RMS; it decays to 0 on a cosine
    adam_tokens: int = 1024  # tokens per minibatch of the MLP refit
    # calibration tokens the MLP refit keeps (a seeded uniform draw, steps.fit_token_masks): the recovery's
    # memory stays bounded however large the calibration set; scores and Gram matrices see every token.
    # 32768: all of the CLI's default calibration (128 x 256)
    fit_tokens: int = 32768
    # what the MLP's Adam refit matches: "block", the dense MLP on the cut model's inputs; "model", the dense
    # model's residual stream after the block (the dense block on the dense stream), so each MLP also undoes
    # the drift the cuts before it left
    target: str = "model"
    seed: int = 0

    def check(self) -> None:
        if self.score not in SCORES:
            raise InputError(f"unknown structured score {self.score!r}; choose from {', '.join(SCORES)}")
        if self.recovery not in RECOVERIES:
            raise InputError(f"unknown recovery {self.recovery!r}; choose from {', '.join(RECOVERIES)}")
        if self.target not in TARGETS:
            raise InputError(f"unknown recovery target {self.target!r}; choose from {', '.join(TARGETS)}")
        for name in ("adam_tokens", "fit_tokens", "adam_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InputError(f"structured option {name} must be at least 1, got {getattr(self, name)}")

    def steps_for(self, tokens: int) -> int:
        """Adam's steps for a fit over `tokens` kept calibration tokens."""
        if self.adam_steps is not None:
            return self.adam_steps
        low, high = AUTO_STEPS
        return min(high, max(low, round(8 * tokens / self.adam_tokens)))

    def follows_dense_stream(self, plan: StructuredPlan) -> bool:
        """Whether the run carries the dense model's residual stream beside the cut one (target="model")."""
        return self.recovery == "adam" and self.target == "model" and plan.mlp_remove > 0
