"""Where a run's time goes: seconds per phase, summed over the blocks, for featprune.json.

The main thread's phases (capture, stats, select, pruned_pass, plus its waits on the reader
and the writer) and the background threads' busy time (read on the prefetch thread, write
on the writer thread) are added up separately: the threads overlap the main thread, so
read_s and write_s are not part of the wall time unless the main thread waited for them
(wait_read_s, wait_write_s: the "idle" time). On CUDA the main-thread phases end with a
synchronisation of the main thread's stream, so kernel time lands in the phase that launched it
(the prefetch and device-to-host copies run on streams of their own, beside it).
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Optional

__all__ = ["PHASES", "PhaseTimer"]

# setup: checkpoint + skeleton + fingerprint before the block loop; capture: batches, the layers
# before block 0 and the recorded block calls; attach: moving block tensors into the module and
# releasing them; finalize: index, side files, report, rename.
PHASES = ("setup_s", "capture_s", "read_s", "wait_read_s", "attach_s", "stats_s", "select_s", "pruned_pass_s",
          "write_s", "wait_write_s", "finalize_s")


class PhaseTimer:
    """Thread-safe per-phase seconds. `with timer.phase("stats_s"): ...` or `timer.add(name, s)`."""

    def __init__(self, sync: Optional[Callable[[], None]] = None):
        self.totals = dict.fromkeys(PHASES, 0.0)
        self._lock = threading.Lock()
        self._sync = sync

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.totals[name] = self.totals.get(name, 0.0) + seconds

    @contextlib.contextmanager
    def phase(self, name: str, *, sync: bool = False):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if sync and self._sync is not None:
                self._sync()
            self.add(name, time.perf_counter() - t0)

    def as_dict(self) -> dict:
        with self._lock:
            return {k: round(v, 4) for k, v in self.totals.items()}
