"""Everything that makes a run resumable and its output atomic: the OUT.partial/ directory, the one
background writer thread, the resume points, and the final report and rename. What progress.json
holds, and how --resume loads it, is state.py's Progress."""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import Future
from pathlib import Path

from ..errors import InputError, NonFiniteError
from ..files import WEIGHT_SUFFIXES, atomic_write_json, fsync_dir
from .background import background_pool
from .checkpoint import INDEX_NAME, write_index
from .report import run_report
from .state import PROGRESS_NAME, REPORT_NAME, Progress
from .test_hooks import die_if_asked, resume_every
from .tuning import DEFAULT_TUNING

__all__ = ["PROGRESS_NAME", "REPORT_NAME", "BackgroundWriter", "copy_side_files", "finish_run", "partial_dir",
           "resume_point_due", "run_in_partial"]


def partial_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".partial")


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

    def __init__(self, nice: int = DEFAULT_TUNING.background_nice):
        self.pool = background_pool("featprune-writer", nice)
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


def finish_run(run, model_dir: Path, out_dir: Path, t_start: float) -> dict:
    """Index, side files and featprune.json into OUT.partial/, then the rename that makes OUT complete.
    A run killed after the report and before the rename finds its progress `finalized` and only renames."""
    config, progress, skel = run.config, run.progress, run.skel
    part = config.part
    if progress.finalized:
        report = json.loads((part / REPORT_NAME).read_text())
    else:
        t_final = time.perf_counter()
        copied = copy_side_files(model_dir, part)
        if config.structured is None:
            weight_map = {k: run.shard_name[0] for k in skel.other_keys}
            for i, keys in enumerate(skel.block_keys):
                weight_map.update({k: run.shard_name[i + 1] for k in keys})
            write_index(part, weight_map, sum(i.nbytes for i in skel.ckpt.tensors.values()))
        else:  # the cut shards hold fewer, smaller tensors, renumbered: index what was written
            from ..structured.streaming import output_config, weight_map

            write_index(part, *weight_map(part, run.shard_name))
            dropped = (progress.structured or {}).get("dropped_blocks", [])
            atomic_write_json(part / "config.json", output_config(model_dir, skel, config.structured, dropped))
        report = run_report(config, progress, skel, model_dir, copied, run.t_capture, t_final, t_start,
                            run.phases(t_start, t_final))
        atomic_write_json(part / REPORT_NAME, report)
        config.progress_path.unlink()
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
# --resume-interval seconds (default 60); the blocks after the last resume point are redone, bit for
# bit, by --resume. Small activations (and distributed runs) make every block a resume point.
def resume_point_due(run, i: int, hidden) -> bool:
    """Whether block i's outputs are saved (see above)."""
    now = time.perf_counter()
    last = run.t_resume_point or run.t_execute
    act = sum(h.numel() * h.element_size() for h in hidden)
    weights = sum(run.skel.ckpt.info(k).nbytes for k in run.skel.block_keys[i])
    every = resume_every()  # tests: resume points at blocks k-1, 2k-1, ...
    if every:
        due = (i + 1) % every == 0
    else:
        due = act <= 2 * weights or now - last >= run.config.request.resume_interval_s
    if run.dist.enabled or due:
        run.t_resume_point = now
        return True
    return False


def run_in_partial(run, model_dir: Path, out_dir: Path, t_start: float) -> dict:
    """Run `run` (engine/run.py's _Run) in OUT.partial/: created fresh (with a first progress record) or
    continued from its progress record; removed again when a failure leaves nothing worth resuming (or
    only a NaN/inf that a rerun would meet again); renamed into place by finish_run at the end."""
    dist, part = run.dist, run.config.part
    fresh = dist.broadcast_object(not part.exists())  # every rank checked before rank 0 creates it
    try:
        if fresh:
            if dist.is_writer:
                part.mkdir(parents=True)
                run.save_progress()
            dist.barrier()
        else:
            run.progress = Progress.load(run.config, run.progress.batch_size)
        run.execute()
    except NonFiniteError as exc:
        # The same input fails the same way on every rerun: keep nothing that invites --resume.
        if dist.is_writer and part.exists():
            shutil.rmtree(part, ignore_errors=True)
            exc.args = (f"{exc.args[0]}; removed {part.name}/ (resuming could only fail again)",)
        raise
    except BaseException:
        if dist.is_writer and fresh and not run.progress.layers:  # nothing worth resuming: leave no directory
            shutil.rmtree(part, ignore_errors=True)
        raise
    if not dist.is_writer:
        dist.barrier()  # returns once rank 0 has renamed the finished output into place
        return {"rank": dist.rank, "world_size": dist.world_size, "out": str(out_dir)}
    report = finish_run(run, model_dir, out_dir, t_start)
    dist.barrier()
    return report
