"""Everything that makes a run resumable and its output atomic: the OUT.partial/ directory,
the run's fingerprint, the one background writer thread, the final report and rename, and the
fault-injection points the tests kill runs at."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import time
from concurrent.futures import Future
from pathlib import Path

import torch

from .._version import __version__, versions
from ..data.calibration_set import CalibrationSet
from ..errors import InputError
from ..files import WEIGHT_SUFFIXES, atomic_write_json, fsync_dir
from ..methods import PruneMethod
from .background import background_pool
from .batches import AUTO
from .checkpoint import INDEX_NAME, write_index
from .report import peak_rss_bytes
from .skeleton import ModelSkeleton

__all__ = ["PROGRESS_NAME", "REPORT_NAME", "BackgroundWriter", "copy_side_files", "die_if_asked", "finish_run",
           "load_progress", "partial_dir", "resume_point_due", "run_fingerprint", "save_progress"]

PROGRESS_NAME = "progress.json"
REPORT_NAME = "featprune.json"


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
        if not f.is_file() or f.name in (INDEX_NAME, REPORT_NAME) or f.name.endswith(WEIGHT_SUFFIXES):
            continue
        shutil.copyfile(f, dst / f.name)
        copied.append(f.name)
    return copied


class BackgroundWriter:
    """One background thread writes shards and progress; at most one job is in flight, so
    host memory holds at most one block waiting to be written."""

    def __init__(self):
        self.pool = background_pool("featprune-writer")
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


_DIE_AT_ENV = "FEATPRUNE_TEST_DIE_AT"


def die_if_asked(phase: str, i: int) -> None:
    """Fault injection for tests: kill this process at `phase` of block i when FEATPRUNE_TEST_DIE_AT is
    "phase:i" (skeleton, read, stats, write, rename), with SIGKILL or FEATPRUNE_TEST_SIGNAL (e.g. INT for Ctrl-C)."""
    if os.environ.get(_DIE_AT_ENV) == f"{phase}:{i}":
        os.kill(os.getpid(), getattr(signal, "SIG" + os.environ.get("FEATPRUNE_TEST_SIGNAL", "KILL")))
        time.sleep(5)  # a catchable signal is handled in the main thread: wait for it here


def finish_run(run, model_dir: Path, out_dir: Path, t_start: float) -> dict:
    """Index, side files and featprune.json into OUT.partial/, then the rename that makes OUT complete.
    A run killed after the report and before the rename finds `run.finalized` and only renames."""
    part, skel = run.part, run.skel
    if run.finalized:
        report = json.loads((part / REPORT_NAME).read_text())
    else:
        t_final = time.perf_counter()
        layers = sorted(run.layers, key=lambda r: r["index"])
        copied = copy_side_files(model_dir, part)
        weight_map = {k: run.shard_name[0] for k in skel.other_keys}
        for i, keys in enumerate(skel.block_keys):
            weight_map.update({k: run.shard_name[i + 1] for k in keys})
        write_index(part, weight_map, sum(i.nbytes for i in run.ckpt.tensors.values()))
        params = sum(r["params"] for r in layers)
        calib = run.calibration.describe() if run.method.needs_calibration else None
        report = {
            "format": 1,
            "method": run.method.describe(),
            "sparsity": run.sparsity if run.pattern is None else 1 - run.n / run.m,
            "pattern": None if run.pattern is None else f"{run.n}:{run.m}",
            "calibration": calib,
            "model": {"source": str(model_dir), "architecture": skel.architecture, "model_code": skel.model_code,
                      "model_type": skel.config.model_type, "blocks": skel.num_blocks,
                      "blocks_path": skel.blocks_path, "dtype": str(skel.storage_dtype).replace("torch.", ""),
                      "compute_dtype": str(skel.dtype).replace("torch.", ""),
                      "tied_embeddings": skel.tied_embeddings, "unpruned_tensors": skel.other_keys,
                      "input_bytes": run.ckpt.file_bytes},
            "overall_sparsity": sum(r["sparsity"] * r["params"] for r in layers) / max(params, 1),
            "prunable_params": params,
            "layers": layers,
            "selection": run.selection.describe(),
            "layerwise": run.layerwise_info,
            "skipped": run.selection.all_skipped(),
            **run.notes,
            "device": str(run.device),
            "batch_size": run.batch_size,
            "batch_size_auto": run.batch_request == AUTO,
            "resumed_from_block": getattr(run, "resumed_from", None),
            "timings": {"capture_s": round(run.t_capture, 4),
                        "blocks_s": round(sum(r["time_s"] for r in layers), 4),
                        "finalize_s": round(time.perf_counter() - t_final, 4),
                        "total_s": round(time.perf_counter() - t_start, 4),
                        "phases": run.phases(t_start, t_final)},
            "peak_rss_bytes": peak_rss_bytes(),
            "peak_cuda_bytes": (torch.cuda.max_memory_allocated(run.device)
                                if run.device.type == "cuda" else None),
            "copied_files": copied,
            "versions": versions(),
        }
        atomic_write_json(part / REPORT_NAME, report)
        run.prog_path.unlink()
        for f in [*part.glob("activations-*.pt"), *part.glob("*.tmp")]:  # incl. leftovers of a kill
            f.unlink()
        fsync_dir(part)
    if out_dir.exists():
        raise InputError(f"{out_dir} appeared while pruning; the result is left in {part}")
    die_if_asked("rename", 0)
    os.rename(part, out_dir)
    fsync_dir(out_dir.parent)
    return report


# A block's saved outputs make it a resume point. When they are large next to the block's weights (e.g.
# 128 x 2048 tokens of a 7B model: 2 GiB per block, five times its shard), saving them every block would
# cost more than the block's compute on a GPU, so such blocks become resume points at most every
# FEATPRUNE_RESUME_INTERVAL_S seconds (default 60); the blocks after the last resume point are redone,
# bit for bit, by --resume. Small activations (and distributed runs) make every block a resume point.
_RESUME_INTERVAL_ENV = "FEATPRUNE_RESUME_INTERVAL_S"


def resume_point_due(run, i: int, hidden) -> bool:
    """Whether block i's outputs are saved (see _RESUME_INTERVAL_ENV)."""
    now = time.perf_counter()
    last = getattr(run, "t_resume_point", None) or getattr(run, "t_execute", now)
    act = sum(h.numel() * h.element_size() for h in hidden)
    weights = sum(run.ckpt.info(k).nbytes for k in run.skel.block_keys[i])
    interval = float(os.environ.get(_RESUME_INTERVAL_ENV, "60"))
    every = os.environ.get("FEATPRUNE_TEST_RESUME_EVERY")  # tests: resume points at blocks k-1, 2k-1, ...
    due = (i + 1) % int(every) == 0 if every else act <= 2 * weights or now - last >= interval
    if run.dist.enabled or due:
        run.t_resume_point = now
        return True
    return False


def save_progress(run, blocks_done: int, act_file: str | None) -> None:
    """Write `run`'s progress record (PROGRESS_NAME): what --resume needs to continue it."""
    atomic_write_json(run.prog_path, {"fingerprint": run.fingerprint, "blocks_done": blocks_done,
                                      "shard0_done": run.shard0_done, "layers": run.layers,
                                      "activations": act_file, "layerwise": run.layerwise_info,
                                      "batch_size": run.batch_size})


def load_progress(run) -> None:
    """Continue `run` from its progress record; InputError when it is missing or from other settings."""
    if not run.prog_path.exists() and (run.part / REPORT_NAME).exists():
        run.finalized = True  # killed between the report and the rename: only the rename is left
        return
    try:
        prog = json.loads(run.prog_path.read_text())
    except (OSError, json.JSONDecodeError):
        raise InputError(f"{run.part} has no readable {PROGRESS_NAME}; delete it and start again") from None
    if prog.get("fingerprint") != run.fingerprint:
        raise InputError(f"{run.part} was made with a different model, calibration set or settings; "
                         "delete it or rerun with the original arguments")
    run.start_block, run.layers = prog["blocks_done"], prog["layers"]
    run.shard0_done, run.act_file = prog["shard0_done"], prog.get("activations")
    run.resumed_from = run.start_block
    if run.batch_request == AUTO and isinstance(prog.get("batch_size"), int):
        run.batch_size = prog["batch_size"]  # the same batches as before the interruption
    run.layerwise_info = prog.get("layerwise")  # a resumed run keeps its per-block targets
