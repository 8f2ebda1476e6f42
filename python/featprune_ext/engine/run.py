"""The streaming layer runner: prune a model one transformer block at a time.

The model is never whole in memory. From config.json we build a skeleton whose
parameters live on the meta device (buffers such as rotary frequencies are real: they
are computed, not stored). Only what precedes the first block is loaded, and of the
word embedding only the rows the calibration tokens use. One forward pass with a
recording stand-in in place of every block captures the arguments each block is called
with (masks, rotary or alibi position encodings, ...), per layer, whatever the family.
Then, for each block: its tensors are read (the next block's are prefetched on a
thread), hooks stream every prunable linear's inputs into ops.accumulate_stats, the
method prunes each matrix in place with ops.prune_rows_, the block runs again so the
next one sees pruned outputs, and a writer thread writes its shard and the progress
record. Output goes to OUT.partial/ and is renamed to OUT at the very end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import torch

from ..data.calibration_set import CalibrationSet
from ..errors import InputError, NonFiniteError
from ..files import atomic_save_torch
from ..methods import PruneMethod
from .background import background_nice, background_pool
from .batches import (
    AUTO,
    auto_batch_size,
    block_activation_bytes,
    make_batches,
    pad_id_for,
    parse_batch_size,
    parse_dtype,
    validate_pattern,
)
from .block_matrices import prune_block_matrices
from .call_order import call_orders_for_run
from .capture import capture_block_calls
from .checkpoint import Checkpoint, RawTensor, write_safetensors
from .distributed import DistContext
from .early_shard import start_early_shard
from .hessian import check_finite_hessians, collect_hessians
from .layerwise import owl_pass
from .lock import RunLock
from .report import block_error, numel, peak_rss_bytes, reset_peak_rss
from .resume import (
    PROGRESS_NAME,
    BackgroundWriter,
    die_if_asked,
    finish_run,
    load_progress,
    partial_dir,
    resume_point_due,
    run_fingerprint,
    save_progress,
)
from .select import Selection
from .skeleton import ModelSkeleton
from .stats import check_finite_stats, collect_stats
from .timing import PhaseTimer
from .transfers import to_device, with_index

__all__ = ["prune_model"]


# Fault injection for tests: SIGKILL ourselves once block i is on disk (FEATPRUNE_TEST_DIE_AFTER_BLOCK=i);
# other phases: resume.die_if_asked.
_DIE_ENV = "FEATPRUNE_TEST_DIE_AFTER_BLOCK"
_NOT_A_RESUME_POINT = object()  # next_hidden of a block that is not a resume point (resume_point_due)


@torch.no_grad()
def prune_model(model_dir, out_dir, *, calibration: CalibrationSet | None, method: PruneMethod,
                sparsity: float | None = None, pattern=None, device="cpu", batch_size: int = 1,
                resume: bool = False, progress: bool = True, dist: DistContext | None = None,
                dtype: torch.dtype | str | None = None, select: Selection | None = None,
                notes: dict | None = None, layerwise=None) -> dict:
    """Prune every linear of every block of the model in `model_dir`; write it to `out_dir`.

    calibration: a CalibrationSet, or a forked.ForkedCall building one (resolved once the model's
    skeleton is built, so the two overlap). pattern: (n, m) or "n:m" for N:M sparsity instead of
    `sparsity`. Returns the report also written to out_dir/featprune.json. Raises InputError for
    bad input (nothing complete-looking is left behind), DiskFullError when the disk fills up
    (rerun with resume=True), BlockError when a block fails at run time (e.g. out of memory; the
    finished blocks are kept for resume).
    dist: data-parallel calibration under torchrun (see distributed.py); every rank calls this,
    rank 0 alone writes, and the other ranks return {"rank": r} once the output is complete.
    dtype: dtype of the forward passes (default: the checkpoint's storage dtype). Statistics are
    accumulated in fp32/fp64 whatever it is; weights are pruned and written in their stored dtype.
    One run per output: an advisory lock on OUT.lock is held throughout (lock.py).
    select: which matrices to prune (select.py; default: all but MoE routers); notes: extra report entries.
    layerwise: a methods.OWL for per-block sparsities (a dense statistics pass first: layerwise.py).
    """
    dist = dist or DistContext()
    t_start = time.perf_counter()
    reset_peak_rss()  # the progress bar's and the report's peak RSS are this run's, not the process's
    sparsity, pattern = validate_pattern(sparsity, pattern)
    batch_size = parse_batch_size(batch_size)  # a positive int or "auto" (batches.auto_batch_size)
    method.check_pattern(*(pattern or (0, 0)))
    if layerwise is not None:
        layerwise.check(method, sparsity, pattern)
    compute_dtype = parse_dtype(dtype)
    background_nice()  # a bad FEATPRUNE_BACKGROUND_NICE fails here, before any work
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"device must be cpu or cuda, got {device}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda was asked for, but torch sees no CUDA device")
    device = with_index(device)
    model_dir, out_dir = Path(model_dir).resolve(), Path(out_dir).resolve()
    part = partial_dir(out_dir)
    if out_dir == model_dir or model_dir in out_dir.parents:
        raise InputError(f"the output {out_dir} must not be inside the input model directory {model_dir}")
    if dist.is_writer:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    # rank 0 alone writes, so rank 0 alone locks (flock on a shared filesystem is not to be trusted)
    with RunLock(out_dir) if dist.is_writer else contextlib.nullcontext():
        if out_dir.exists():
            raise InputError(f"{out_dir} already exists; refusing to overwrite it (choose another --out or delete it)")
        if part.exists() and not resume:
            raise InputError(f"an unfinished run is in {part}: rerun with --resume to continue it, or delete it")
        ckpt = Checkpoint(model_dir)
        early = start_early_shard(ckpt, part, dist)  # copies the unpruned tensors during the skeleton's imports
        try:
            return _prune_locked(ckpt, model_dir, out_dir, part, calibration, method, sparsity, pattern, device,
                                 batch_size, progress, dist, compute_dtype, t_start, select or Selection(), notes,
                                 layerwise, early)
        finally:
            if early is not None:
                early.close()  # dropped unless used; joined before the input files close
            ckpt.close()


def _prune_locked(ckpt, model_dir, out_dir, part, calibration, method, sparsity, pattern, device, batch_size,
                  progress, dist, compute_dtype, t_start, select, notes, layerwise=None, early=None) -> dict:
    skel = ModelSkeleton(ckpt, compute_dtype)
    die_if_asked("skeleton", 0)  # the early shard's unnamed copy exists, and is not linked yet
    if hasattr(calibration, "result"):  # being built in a forked child (api.py) while the skeleton was built
        calibration = calibration.result()
    run = _Run(skel, part, calibration, method, sparsity, pattern, device, batch_size, progress, dist, select,
               layerwise)
    run.notes, run.early_shard = notes or {}, early
    fresh = dist.broadcast_object(not part.exists())  # every rank checked before rank 0 creates it
    try:
        if fresh:
            if dist.is_writer:
                part.mkdir(parents=True)
                save_progress(run, 0, None)
            dist.barrier()
            run.execute()
        else:
            load_progress(run)
            run.execute()
    except NonFiniteError as exc:
        # The same input fails the same way on every rerun: keep nothing that invites --resume.
        if dist.is_writer and part.exists():
            shutil.rmtree(part, ignore_errors=True)
            exc.args = (f"{exc.args[0]}; removed {part.name}/ (resuming could only fail again)",)
        raise
    except BaseException:
        if dist.is_writer and fresh and not run.layers:  # nothing worth resuming: leave no directory behind
            shutil.rmtree(part, ignore_errors=True)
        raise
    if not dist.is_writer:
        dist.barrier()  # returns once rank 0 has renamed the finished output into place
        return {"rank": dist.rank, "world_size": dist.world_size, "out": str(out_dir)}
    report = finish_run(run, model_dir, out_dir, t_start)
    dist.barrier()
    return report


class _Run:
    """One pruning run: the block loop, its writer and its progress record."""

    def __init__(self, skel: ModelSkeleton, part: Path, calibration, method: PruneMethod, sparsity, pattern,
                 device: torch.device, batch_size: int, progress: bool, dist: DistContext, select: Selection,
                 layerwise=None):
        self.skel, self.ckpt, self.part, self.dist = skel, skel.ckpt, part, dist
        self.calibration, self.method, self.device = calibration, method, device
        self.sparsity, self.pattern, self.batch_size, self.progress = sparsity, pattern, batch_size, progress
        self.batch_request = batch_size  # "auto" is resolved below; a resumed run reuses the resolved size
        self.n, self.m = pattern or (0, 0)
        if method.needs_calibration:
            if calibration is None:
                raise InputError(f"method {method.name} needs calibration samples")
            if skel.max_positions is not None and calibration.max_len > skel.max_positions:
                raise InputError(f"calibration samples have {calibration.max_len} tokens, above the model's limit "
                                 f"of {skel.max_positions} positions: lower --seqlen")
            method.prepare(list(calibration.bucket_names))
        self.selection = select.resolve(skel)  # InputError before any work when a pattern matches nothing
        for i in range(skel.num_blocks):
            for pl in self.selection.pruned(i):
                if self.m and pl.in_features % self.m:
                    raise InputError(f"{skel.block_prefix[i]}{pl.param_name} has {pl.in_features} input features, "
                                     f"not a multiple of M={self.m}: the {self.n}:{self.m} pattern cannot apply")
        if batch_size == AUTO:
            self.batch_size = self._auto_batch_size() if method.needs_calibration else 1
        self.fingerprint = run_fingerprint(skel, calibration, method, sparsity, pattern, batch_size, device)
        if skel.dtype != skel.storage_dtype:  # the compute dtype changes the statistics, so the masks
            self.fingerprint += f"-{str(skel.dtype).replace('torch.', '')}"
        if not select.is_default:
            self.fingerprint += f"-select{select.fingerprint()}"
        if dist.enabled:  # a resumed run must split the batches the same way
            self.fingerprint += f"-world{dist.world_size}"
        self.layerwise, self.layerwise_info = layerwise, None  # OWL: settings; ratios and per-block targets
        self.call_orders = call_orders_for_run()  # statistics passes stop at a block's last linear input
        if layerwise is not None:
            self.fingerprint += f"-{layerwise.fingerprint()}"
        self.prog_path = part / PROGRESS_NAME
        self.start_block, self.layers, self.shard0_done, self.act_file = 0, [], False, None
        self.finalized, self.early_shard = False, None  # early_shard: set by _prune_locked (early_shard.py)
        total = skel.num_blocks + 1
        self.shard_name = [f"model-{j + 1:05d}-of-{total:05d}.safetensors" for j in range(total)]
        self.t_capture = 0.0
        # a phase waits for its own kernels (this thread's stream), not for the prefetch and
        # device-to-host copies running beside it on their own streams
        self.timer = PhaseTimer(sync=(lambda: torch.cuda.current_stream(device).synchronize())
                                if device.type == "cuda" else None)

    def _auto_batch_size(self) -> int:
        """--batch-size auto: from the memory available now (batches.auto_batch_size); rank 0 decides."""
        token_bytes, position_bytes = block_activation_bytes(self.skel.blocks[0], self.skel.config, self.skel.dtype)
        size = auto_batch_size(self.calibration, token_bytes, position_bytes, self.device, self.dist.world_size)
        return int(self.dist.broadcast_object(size))

    # -- writer jobs (run on the writer thread, one at a time) --
    def _write_shard0(self) -> None:
        with self.timer.phase("write_s"):
            self._write_shard0_now()

    def _write_shard0_now(self) -> None:
        path = self.part / self.shard_name[0]
        if self.early_shard is None or not self.early_shard.link(self.skel.other_keys, path):
            write_safetensors(path, [(k, RawTensor(self.ckpt, k)) for k in self.skel.other_keys])
        self.shard0_done = True
        save_progress(self, len(self.layers), self.act_file)

    def _write_block(self, i: int, entries, next_hidden, layer_report) -> None:
        with self.timer.phase("write_s"):
            self._write_block_now(i, entries, next_hidden, layer_report)

    def _write_block_now(self, i: int, entries, next_hidden, layer_report) -> None:
        if i in self.host_copies:  # the pruned matrices' device-to-host copies (transfers.to_host)
            self.host_copies.pop(i).synchronize()
        write_safetensors(self.part / self.shard_name[i + 1], entries)
        die_if_asked("write", i)
        if next_hidden is _NOT_A_RESUME_POINT:  # progress.json keeps the last resume point
            self.layers.append(layer_report)
            return
        new_act = None
        if next_hidden is not None:
            new_act = self._act_name(i + 1)
            atomic_save_torch(self.part / new_act, next_hidden)
        self.layers.append(layer_report)
        self.act_file = new_act
        save_progress(self, i + 1, new_act)
        for old in self.part.glob("activations-*.pt"):  # the previous block's inputs are no longer needed
            if not old.name.startswith(f"activations-{i + 1:05d}"):
                old.unlink()

    def _act_name(self, block: int) -> str:
        """This rank's saved inputs of `block` (one file per rank under torchrun)."""
        if not self.dist.enabled:
            return f"activations-{block:05d}.pt"
        return f"activations-{block:05d}.rank{self.dist.rank}.pt"

    # -- the block loop --
    def _prepare_inputs(self):
        skel, device = self.skel, self.device
        t0 = time.perf_counter()
        pad_id = pad_id_for(skel.config, self.ckpt.info(skel.embedding_key).shape[0])
        batches = make_batches(self.calibration, self.batch_size, pad_id)
        if self.dist.enabled:  # this rank's share; statistics are all-reduced per block
            if len(batches) < self.dist.world_size:
                raise InputError(f"{len(batches)} calibration batches cannot feed {self.dist.world_size} ranks: "
                                 "use more samples or a smaller --batch-size")
            batches = [batches[j] for j in self.dist.batch_indices(len(batches))]
        skel.load_pre_block(torch.cat([b.ids.reshape(-1) for b in batches]), device, skel.dtype)
        calls, hidden = capture_block_calls(skel.model, skel.blocks, batches, device)
        if self.start_block > 0:  # resume: the saved outputs of the last finished block
            act = self.part / self._act_name(self.start_block)
            hidden = [h.to(device) for h in torch.load(act, weights_only=True)]
        self.t_capture = time.perf_counter() - t0
        self.timer.add("capture_s", self.t_capture)
        return batches, calls, hidden

    def _load(self, i: int):
        with self.timer.phase("read_s"):
            return self._load_now(i)

    def _load_now(self, i: int):
        cuda = self.device.type == "cuda"
        die_if_asked("read", i)
        tensors = self.skel.read_block(i, pin_memory=cuda)
        return to_device(tensors, self.device, self.copy_stream) if cuda else (tensors, None)

    def execute(self) -> None:
        if self.finalized:
            return
        self.t_execute = time.perf_counter()
        skel, method, device = self.skel, self.method, self.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        self.copy_stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.d2h_stream = torch.cuda.Stream(device) if device.type == "cuda" else None  # transfers.to_host
        self.host_copies = {}
        batches, calls, hidden = [], [], []
        if method.needs_calibration and self.start_block < skel.num_blocks:
            batches, calls, hidden = self._prepare_inputs()
            if self.layerwise is not None and self.layerwise_info is None:  # OWL's dense pass, then block 0
                hidden = owl_pass(self, self.layerwise, batches, calls, hidden)
                self.timer.add("owl_pass_s", self.layerwise_info["time_s"])
                if self.dist.is_writer:
                    save_progress(self, 0, None)
        writer = BackgroundWriter()
        loader = background_pool("featprune-prefetch")
        die_after = os.environ.get(_DIE_ENV)
        bar = None
        try:
            if not self.shard0_done and self.dist.is_writer:
                writer.submit(self._write_shard0)
            if self.start_block < skel.num_blocks:
                from tqdm.auto import tqdm

                bar = tqdm(total=skel.num_blocks, initial=self.start_block, desc="pruning", unit="block",
                           file=sys.stderr, disable=not self.progress or not self.dist.is_writer,
                           dynamic_ncols=True)
                nxt = loader.submit(self._load, self.start_block)
            for i in range(self.start_block, skel.num_blocks):
                t_block = time.perf_counter()
                try:
                    with self.timer.phase("wait_read_s"):
                        tensors, event = nxt.result()
                    if i + 1 < skel.num_blocks:
                        nxt = loader.submit(self._load, i + 1)  # prefetch while this block computes
                    hidden, next_hidden, entries, report = self._block(i, tensors, event, batches, calls, hidden)
                except RuntimeError as exc:
                    raise block_error(exc, i, skel.block_prefix[i], self.device, self.batch_size,
                                      self.part.name) from exc
                report["time_s"] = round(time.perf_counter() - t_block, 4)
                if self.dist.enabled:
                    # every rank's activations are on disk before rank 0 records the block as done
                    if not self.dist.is_writer and next_hidden is not None and next_hidden is not _NOT_A_RESUME_POINT:
                        atomic_save_torch(self.part / self._act_name(i + 1), next_hidden)
                    self.dist.barrier()
                if self.dist.is_writer:
                    with self.timer.phase("wait_write_s"):  # at most one block in flight: waits for the last one
                        writer.submit(self._write_block, i, entries, next_hidden, report)
                if bar is not None:
                    bar.set_postfix(peak_rss=f"{peak_rss_bytes() / 2**30:.2f}G", refresh=False)
                    bar.update(1)
                if die_after is not None and int(die_after) == i:
                    writer.wait()
                    os.kill(os.getpid(), signal.SIGKILL)
            with self.timer.phase("wait_write_s"):
                writer.wait()
        finally:
            if bar is not None:
                bar.close()
            loader.shutdown(wait=True, cancel_futures=True)
            writer.close()

    def _block(self, i: int, tensors, event, batches, calls, hidden):
        """Statistics, pruning and the pruned pass of block i: (its outputs, what to save of them,
        the shard entries, the layer report)."""
        skel, method, device = self.skel, self.method, self.device
        if event is not None:
            stream = torch.cuda.current_stream(device)
            stream.wait_event(event)
            for t in tensors.values():  # allocated on the copy stream, used and freed on this one
                t.record_stream(stream)
        linears = self.selection.pruned(i)  # the others are copied unchanged, like norms
        # Forward passes in another dtype than the stored one: prune the stored-precision weights
        # (so kept weights are written back bit for bit) and refresh the module's copy afterwards.
        keys = {skel.block_key(i, pl.param_name) for pl in linears}
        originals = {k: t for k, t in tensors.items() if k in keys and t.dtype != skel.dtype}
        with self.timer.phase("attach_s"):
            block = skel.attach_block(i, tensors, device, skel.dtype)
        del tensors
        stats = {}
        if method.needs_calibration and method.statistics == "hessian":  # SparseGPT
            with self.timer.phase("stats_s", sync=True):
                stats = collect_hessians(block, linears, calls[i], hidden, batches, self.calibration.bucket_names,
                                         method.base_buckets, device, self.dist, call_orders=self.call_orders)
                check_finite_hessians(skel.block_prefix[i], i, stats, skel.dtype)
        elif method.needs_calibration:
            with self.timer.phase("stats_s", sync=True):
                stats = collect_stats(block, linears, calls[i], hidden, batches, self.calibration.bucket_names,
                                      device, call_orders=self.call_orders)
                self.dist.all_reduce_([t for st in stats.values() for t in (st.sumsq, st.count)],
                                      [st.absmax for st in stats.values()])
                # NaN or inf in a linear's inputs: name the block and the linear, and the likely cause
                check_finite_stats(skel.block_prefix[i], i, linears, stats, skel.dtype)
        die_if_asked("stats", i)
        with self.timer.phase("select_s", sync=True):
            sparsity = self.layerwise_info["target_sparsity"][i] if self.layerwise_info else self.sparsity
            entries, matrices = prune_block_matrices(self, i, linears, stats, originals, sparsity)
        del originals
        next_hidden = None
        if method.needs_calibration and i + 1 < skel.num_blocks:
            with self.timer.phase("pruned_pass_s", sync=True):
                hidden = [c.run(block, h) for c, h in zip(calls[i], hidden)]  # pruned outputs feed block i+1
                if not resume_point_due(self, i, hidden):
                    next_hidden = _NOT_A_RESUME_POINT
                else:
                    next_hidden = [h.to("cpu") for h in hidden] if device.type == "cuda" else hidden
        with self.timer.phase("attach_s"):
            skel.release_block(i)
            del block
        params = sum(numel(v["shape"]) for v in matrices.values())
        zeros = sum(v["sparsity"] * numel(v["shape"]) for v in matrices.values())
        report = {"index": i, "time_s": 0.0, "sparsity": zeros / max(params, 1), "params": params,
                  "matrices": matrices, "skipped": self.selection.skipped[i], "peak_rss_bytes": peak_rss_bytes()}
        if self.layerwise_info:
            report["target_sparsity"] = self.layerwise_info["target_sparsity"][i]
        if device.type == "cuda":
            report["peak_cuda_bytes"] = torch.cuda.max_memory_allocated(device)
        return hidden, next_hidden, entries, report

    def phases(self, t_start: float, t_final: float) -> dict:
        """Per-phase seconds (timing.py): main-thread phases, background busy time and main-thread waits."""
        self.timer.add("setup_s", getattr(self, "t_execute", t_final) - t_start)
        self.timer.add("finalize_s", time.perf_counter() - t_final)
        return self.timer.as_dict()
