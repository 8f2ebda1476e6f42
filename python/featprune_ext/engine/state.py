"""A run's state, in three parts: what it was asked (RunRequest), what it does, fixed before its first
block (RunConfig: the request checked against the model), and what is done (Progress: the record in
OUT.partial/progress.json that --resume loads and continues). The report (report.run_report) is
built from the config and the progress; everything else a run holds (threads, streams, timers)
lives and dies with the process (run.py's _Run).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..errors import InputError
from ..files import atomic_write_json
from ..methods import OWL, PruneMethod
from .batches import AUTO
from .distributed import DistContext
from .select import Selection
from .skeleton import ModelSkeleton
from .tuning import DEFAULT_TUNING, Tuning

__all__ = ["DEFAULT_RESUME_INTERVAL_S", "PROGRESS_NAME", "REPORT_NAME", "Progress", "RunConfig", "RunRequest"]

PROGRESS_NAME = "progress.json"
REPORT_NAME = "featprune.json"
DEFAULT_RESUME_INTERVAL_S = 60.0


@dataclass(frozen=True)
class RunRequest:
    """What the engine was asked for, each value already valid on its own (engine.prune_model)."""

    method: PruneMethod
    sparsity: float | None = None
    pattern: tuple[int, int] | None = None
    batch_size: int | str = 1  # an int or "auto" (resolved from the memory free at the start)
    select: Selection = field(default_factory=Selection)
    layerwise: OWL | None = None
    notes: dict = field(default_factory=dict)  # extra report entries (e.g. the preset)
    progress_bar: bool = True
    resume_interval_s: float = DEFAULT_RESUME_INTERVAL_S
    tuning: Tuning = DEFAULT_TUNING
    structured: Any = None  # structured.StructuredRequest of --structured SPEC, or None


@dataclass(frozen=True)
class RunConfig:
    """What a run does, fixed before its first block: the request checked against the model, the
    matrices it prunes, and the fingerprint a resumed run must match."""

    request: RunRequest
    part: Path  # OUT.partial/
    calibration: Any  # data.CalibrationSet, or None for a method that reads none
    device: torch.device
    selection: Any  # select.ResolvedSelection: the pruned and skipped matrices per block
    fingerprint: str
    structured: Any = None  # structured.StructuredPlan: the counts --structured removes from this model

    @property
    def prunes_weights(self) -> bool:
        """Whether the method prunes inside the (kept) matrices: always, except --structured without
        --sparsity or --pattern."""
        return self.request.structured is None or self.sparsity is not None or self.pattern is not None

    @property
    def needs_inputs(self) -> bool:
        """Whether the blocks run on calibration inputs (a calibrated method, or --structured)."""
        return self.method.needs_calibration or self.request.structured is not None

    @property
    def method(self) -> PruneMethod:
        return self.request.method

    @property
    def sparsity(self) -> float | None:
        return self.request.sparsity

    @property
    def pattern(self) -> tuple[int, int] | None:
        return self.request.pattern

    @property
    def layerwise(self) -> OWL | None:
        return self.request.layerwise

    @property
    def n(self) -> int:
        return self.pattern[0] if self.pattern else 0

    @property
    def m(self) -> int:
        return self.pattern[1] if self.pattern else 0

    @property
    def progress_path(self) -> Path:
        return self.part / PROGRESS_NAME

    @classmethod
    def plan(cls, skel: ModelSkeleton, part: Path, calibration, request: RunRequest, device: torch.device,
             dist: DistContext) -> RunConfig:
        """Check the request against the model (InputError before any work) and fix the run."""
        method, n, m = request.method, *(request.pattern or (0, 0))
        structured, widths = None, {}
        if request.structured is not None:
            from ..structured.streaming import cut_in_features, plan_for

            structured = plan_for(skel, request.structured, dist)
            widths = cut_in_features(structured)  # an N:M pattern applies to the matrices as cut
            if calibration is None:
                raise InputError("--structured needs calibration samples (--calib or --calib-texts)")
            if skel.max_positions is not None and calibration.max_len > skel.max_positions:
                raise InputError(f"calibration samples have {calibration.max_len} tokens, above the model's limit "
                                 f"of {skel.max_positions} positions: lower --seqlen")
        if method.needs_calibration:
            if calibration is None:
                raise InputError(f"method {method.name} needs calibration samples")
            if skel.max_positions is not None and calibration.max_len > skel.max_positions:
                raise InputError(f"calibration samples have {calibration.max_len} tokens, above the model's limit "
                                 f"of {skel.max_positions} positions: lower --seqlen")
            method.prepare(list(calibration.bucket_names))
        selection = request.select.resolve(skel)  # InputError before any work when a pattern matches nothing
        for i in range(skel.num_blocks):
            for pl in selection.pruned(i):
                width = widths.get(pl.param_name, pl.in_features)
                if m and width % m:
                    after = " after the --structured cut" if pl.param_name in widths else ""
                    raise InputError(f"{skel.block_prefix[i]}{pl.param_name} has {width} input features{after}, "
                                     f"not a multiple of M={m}: the {n}:{m} pattern cannot apply")
        return cls(request, part, calibration, device, selection,
                   _fingerprint(skel, calibration, request, device, dist), structured)


def _fingerprint(skel: ModelSkeleton, calibration, request: RunRequest, device: torch.device,
                 dist: DistContext) -> str:
    """Everything that decides the masks: a resumed run must have the same."""
    ckpt, method = skel.ckpt, request.method
    blob = {
        "config": ckpt.config_dict,
        "tensors": [(n, list(i.shape), str(i.dtype), i.path.name) for n, i in sorted(ckpt.tensors.items())],
        "calibration": calibration.fingerprint() if method.needs_calibration or request.structured else None,
        "method": method.describe(), "sparsity": request.sparsity, "pattern": request.pattern,
        "batch_size": request.batch_size, "device": device.type, "featprune": __version__,
    }
    fingerprint = hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()
    if skel.dtype != skel.storage_dtype:  # the compute dtype changes the statistics, so the masks
        fingerprint += f"-{str(skel.dtype).replace('torch.', '')}"
    if not request.select.is_default:
        fingerprint += f"-select{request.select.fingerprint()}"
    if dist.enabled:  # a resumed run must split the batches the same way
        fingerprint += f"-world{dist.world_size}"
    if request.layerwise is not None:
        fingerprint += f"-{request.layerwise.fingerprint()}"
    if request.structured is not None:  # the spec and the score and recovery options decide the cut
        blob = json.dumps(request.structured.describe(), sort_keys=True).encode()
        fingerprint += f"-structured{hashlib.sha256(blob).hexdigest()[:16]}"
    return fingerprint


@dataclass
class Progress:
    """What is done. `blocks_done`, `shard0_done`, `layers` (the finished blocks' reports), `activations`
    (the saved inputs of block blocks_done), `layerwise` (OWL's ratios and per-block targets) and
    `batch_size` (the size used, so a resumed "auto" run batches the same way) are what progress.json
    holds; `layers` may run ahead of `blocks_done` by the blocks written since the last resume point.
    `resumed_from` and `finalized` (the report is written, only the rename is left) are what loading found."""

    fingerprint: str
    batch_size: int
    blocks_done: int = 0
    shard0_done: bool = False
    layers: list[dict] = field(default_factory=list)
    activations: str | None = None
    layerwise: dict | None = None
    structured: dict | None = None  # --structured's dense pass: block influence and the dropped blocks
    resumed_from: int | None = None
    finalized: bool = False

    def save(self, path: Path) -> None:
        atomic_write_json(path, {"fingerprint": self.fingerprint, "blocks_done": self.blocks_done,
                                 "shard0_done": self.shard0_done, "layers": self.layers,
                                 "activations": self.activations, "layerwise": self.layerwise,
                                 "batch_size": self.batch_size,
                                 **({"structured": self.structured} if self.structured is not None else {})})

    @classmethod
    def load(cls, config: RunConfig, batch_size: int) -> Progress:
        """The progress of the unfinished run in config.part; InputError when it is missing or was made
        with other settings. batch_size: this run's; an "auto" request reuses the stored one."""
        part, path = config.part, config.progress_path
        if not path.exists() and (part / REPORT_NAME).exists():
            # killed between the report and the rename: only the rename is left
            return cls(config.fingerprint, batch_size, finalized=True)
        try:
            prog = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            raise InputError(f"{part} has no readable {PROGRESS_NAME}; delete it and start again") from None
        if prog.get("fingerprint") != config.fingerprint:
            raise InputError(f"{part} was made with a different model, calibration set or settings; "
                             "delete it or rerun with the original arguments")
        if config.request.batch_size == AUTO and isinstance(prog.get("batch_size"), int):
            batch_size = prog["batch_size"]  # the same batches as before the interruption
        return cls(config.fingerprint, batch_size, blocks_done=prog["blocks_done"], shard0_done=prog["shard0_done"],
                   layers=prog["layers"], activations=prog.get("activations"),
                   layerwise=prog.get("layerwise"),  # a resumed run keeps its per-block targets
                   structured=prog.get("structured"),  # and its dropped blocks
                   resumed_from=prog["blocks_done"])
