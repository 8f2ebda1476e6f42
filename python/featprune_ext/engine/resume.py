"""Everything that makes a run resumable and its output atomic: the OUT.partial/ directory,
the run's fingerprint, and the one background writer thread."""

from __future__ import annotations

import hashlib
import json
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

from .._version import __version__
from ..data.calibration_set import CalibrationSet
from ..methods import PruneMethod
from .checkpoint import INDEX_NAME
from .skeleton import ModelSkeleton

__all__ = ["PROGRESS_NAME", "REPORT_NAME", "BackgroundWriter", "copy_side_files", "partial_dir", "run_fingerprint"]

PROGRESS_NAME = "progress.json"
REPORT_NAME = "featprune.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".ckpt")


def partial_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".partial")


def run_fingerprint(skel: ModelSkeleton, calibration: CalibrationSet, method: PruneMethod, sparsity, pattern,
                 batch_size: int, device: torch.device) -> str:
    ckpt = skel.ckpt
    blob = {
        "config": ckpt.config_dict,
        "tensors": [(n, list(i.shape), str(i.dtype), i.path.name) for n, i in sorted(ckpt.tensors.items())],
        "calibration": calibration.fingerprint() if method.needs_calibration else None,
        "method": method.describe(), "sparsity": sparsity, "pattern": pattern, "batch_size": batch_size,
        "device": device.type, "featprune": __version__,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def copy_side_files(src: Path, dst: Path) -> list[str]:
    """config, tokenizer, generation config and any other non-weight file, byte for byte."""
    copied = []
    for f in sorted(src.iterdir()):
        if not f.is_file() or f.name in (INDEX_NAME, REPORT_NAME) or f.name.endswith(_WEIGHT_SUFFIXES):
            continue
        shutil.copyfile(f, dst / f.name)
        copied.append(f.name)
    return copied


class BackgroundWriter:
    """One background thread writes shards and progress; at most one job is in flight, so
    host memory holds at most one block waiting to be written."""

    def __init__(self):
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="featprune-writer")
        self.pending: Future | None = None

    def submit(self, fn, *args) -> None:
        self.wait()
        self.pending = self.pool.submit(fn, *args)

    def wait(self) -> None:
        if self.pending is not None:
            fut, self.pending = self.pending, None
            fut.result()  # re-raises the writer's error (e.g. DiskFullError) in the main thread

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.pool.shutdown(wait=True)
