"""Engine levers that change speed, never results: internal settings, not options. The defaults are
what every run uses; bench scripts pass another Tuning through featprune_ext.prune(..., tuning=...)
(or engine.prune_model) to measure what a lever buys (bench/bench_engine.py --tuning)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError

__all__ = ["DEFAULT_TUNING", "Tuning"]


@dataclass(frozen=True)
class Tuning:
    fork: bool = True  # build the calibration set in a forked child while the skeleton is built (forked.py)
    early_shard: bool = True  # copy the unpruned tensors during the imports (early_shard.py)
    stats_early_stop: bool = True  # stop each statistics batch at the block's last linear input (call_order.py)
    background_nice: int = 10  # niceness added to the reader and writer threads, 0..19 (background.py)

    def __post_init__(self) -> None:
        nice = self.background_nice
        if isinstance(nice, bool) or not isinstance(nice, int) or not 0 <= nice <= 19:
            raise InputError(f"Tuning.background_nice must be an integer from 0 to 19, got {nice!r}")


DEFAULT_TUNING = Tuning()
