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
import signal
import sys
import time
from pathlib import Path

import torch

from ..data.calibration_set import CalibrationSet
from ..errors import FeatpruneError, InputError
from ..files import atomic_save_torch
from ..methods import OWL, PruneMethod
from .background import background_pool
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
from .block_statistics import BlockStatistics
from .call_order import call_orders_for_run
from .capture import capture_block_calls
from .checkpoint import Checkpoint, RawTensor, write_safetensors
from .distributed import DistContext
from .early_shard import start_early_shard
from .layerwise import owl_pass
from .lock import RunLock
from .report import block_error, numel, peak_rss_bytes, reset_peak_rss
from .resume import BackgroundWriter, partial_dir, resume_point_due, run_in_partial
from .select import Selection
from .skeleton import ModelSkeleton
from .state import DEFAULT_RESUME_INTERVAL_S, Progress, RunConfig, RunRequest
from .test_hooks import die_after_block, die_if_asked
from .timing import PhaseTimer
from .transfers import to_device, with_index
from .tuning import DEFAULT_TUNING, Tuning

__all__ = ["prune_model"]


_NOT_A_RESUME_POINT = object()  # next_hidden of a block that is not a resume point (resume_point_due)


@torch.no_grad()
def prune_model(model_dir, out_dir, *, calibration: CalibrationSet | None, method: PruneMethod,
                sparsity: float | None = None, pattern=None, device="cpu", batch_size: int | str = 1,
                resume: bool = False, progress: bool = True, dist: DistContext | None = None,
                dtype: torch.dtype | str | None = None, select: Selection | None = None,
                notes: dict | None = None, layerwise: OWL | None = None, model_code: str = "auto",
                resume_interval_s: float | None = None, tuning: Tuning = DEFAULT_TUNING, structured=None) -> dict:
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
    model_code: "auto", "builtin" or "transformers" (skeleton.py); resume_interval_s: the most seconds
    between resume points (resume.py; default 60); tuning: speed levers for benchmarks (tuning.py).
    structured: a structured.StructuredRequest (--structured SPEC): whole MLP channels, key/value groups,
    blocks and experts removed (structured/streaming.py); sparsity and pattern may then both be None (no
    pruning inside the kept matrices).
    """
    dist = dist or DistContext()
    t_start = time.perf_counter()
    reset_peak_rss()  # the progress bar's and the report's peak RSS are this run's, not the process's
    if structured is None or sparsity is not None or pattern is not None:
        sparsity, pattern = validate_pattern(sparsity, pattern)
    request = RunRequest(method, sparsity, pattern, parse_batch_size(batch_size), select or Selection(), layerwise,
                         dict(notes or {}), progress,
                         DEFAULT_RESUME_INTERVAL_S if resume_interval_s is None else float(resume_interval_s), tuning,
                         structured)
    method.check_pattern(*(pattern or (0, 0)))
    if layerwise is not None:
        layerwise.check(method, sparsity, pattern)
    compute_dtype = parse_dtype(dtype)
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
        # copies the unpruned tensors during the skeleton's imports
        early = start_early_shard(ckpt, part, dist) if tuning.early_shard else None
        try:
            skel = ModelSkeleton(ckpt, compute_dtype, model_code=model_code)
            die_if_asked("skeleton", 0)  # the early shard's unnamed copy exists, and is not linked yet
            if hasattr(calibration, "result"):  # being built in a forked child (api.py) while the skeleton was built
                calibration = calibration.result()
            run = _Run(skel, part, calibration, request, device, dist)
            run.early_shard = early
            return run_in_partial(run, model_dir, out_dir, t_start)
        finally:
            if early is not None:
                early.close()  # dropped unless used; joined before the input files close
            ckpt.close()


class _Run:
    """One pruning run: its config (fixed), its progress (what is done; saved by the writer) and what
    lives only in this process: the block loop, the reader and writer threads, CUDA streams, timers."""

    def __init__(self, skel: ModelSkeleton, part: Path, calibration, request: RunRequest, device: torch.device,
                 dist: DistContext):
        self.skel, self.dist = skel, dist
        self.config = RunConfig.plan(skel, part, calibration, request, device, dist)
        batch_size = request.batch_size
        if batch_size == AUTO:  # resolved once; a resumed run reuses the size it recorded (Progress.load)
            batch_size = self._auto_batch_size() if self.config.needs_inputs else 1
        self.progress = Progress(self.config.fingerprint, batch_size)
        self.call_orders = call_orders_for_run(request.tuning.stats_early_stop)
        total = skel.num_blocks + 1
        self.shard_name = [f"model-{j + 1:05d}-of-{total:05d}.safetensors" for j in range(total)]
        self.early_shard = None  # set by prune_model (early_shard.py)
        self.t_capture, self.t_execute, self.t_resume_point = 0.0, None, None
        self.copy_stream = self.d2h_stream = None  # CUDA: the prefetch and device-to-host streams (transfers.py)
        self.host_copies = {}  # block -> its pruned matrices' pending device-to-host copy
        self.dense_stream = None  # --structured's recovery target "model": the dense model's hidden states
        # a phase waits for its own kernels (this thread's stream), not for the prefetch and
        # device-to-host copies running beside it on their own streams
        self.timer = PhaseTimer(sync=(lambda: torch.cuda.current_stream(device).synchronize())
                                if device.type == "cuda" else None)

    @property
    def device(self) -> torch.device:
        return self.config.device

    def _auto_batch_size(self) -> int:
        """--batch-size auto: from the memory available now (batches.auto_batch_size); rank 0 decides."""
        token_bytes, position_bytes = block_activation_bytes(self.skel.blocks[0], self.skel.config, self.skel.dtype)
        size = auto_batch_size(self.config.calibration, token_bytes, position_bytes, self.device,
                               self.dist.world_size)
        return int(self.dist.broadcast_object(size))

    def save_progress(self) -> None:
        self.progress.save(self.config.progress_path)

    # -- writer jobs (run on the writer thread, one at a time) --
    def _write_shard0(self) -> None:
        with self.timer.phase("write_s"):
            self._write_shard0_now()

    def _write_shard0_now(self) -> None:
        path = self.config.part / self.shard_name[0]
        ckpt = self.skel.ckpt
        if self.early_shard is None or not self.early_shard.link(self.skel.other_keys, path):
            write_safetensors(path, [(k, RawTensor(ckpt, k)) for k in self.skel.other_keys])
        self.progress.shard0_done = True
        self.save_progress()

    def _write_block(self, i: int, entries, next_hidden, layer_report) -> None:
        with self.timer.phase("write_s"):
            self._write_block_now(i, entries, next_hidden, layer_report)

    def _write_block_now(self, i: int, entries, next_hidden, layer_report) -> None:
        part, progress = self.config.part, self.progress
        if i in self.host_copies:  # the pruned matrices' device-to-host copies (transfers.to_host)
            self.host_copies.pop(i).synchronize()
        if entries is not None:  # None: a block --structured drops
            write_safetensors(part / self.shard_name[i + 1], entries)
        die_if_asked("write", i)
        if next_hidden is _NOT_A_RESUME_POINT:  # progress.json keeps the last resume point
            progress.layers.append(layer_report)
            return
        new_act = None
        if next_hidden is not None:
            new_act = self._act_name(i + 1)
            atomic_save_torch(part / new_act, next_hidden)
        progress.layers.append(layer_report)
        progress.blocks_done, progress.activations = i + 1, new_act
        self.save_progress()
        for old in part.glob("activations-*.pt"):  # the previous block's inputs are no longer needed
            if not old.name.startswith(f"activations-{i + 1:05d}"):
                old.unlink()

    def _act_name(self, block: int) -> str:
        """This rank's saved inputs of `block` (one file per rank under torchrun)."""
        if not self.dist.enabled:
            return f"activations-{block:05d}.pt"
        return f"activations-{block:05d}.rank{self.dist.rank}.pt"

    # -- the block loop --
    def _prepare_inputs(self, start_block: int):
        skel, device, calibration = self.skel, self.device, self.config.calibration
        t0 = time.perf_counter()
        pad_id = pad_id_for(skel.config, skel.ckpt.info(skel.embedding_key).shape[0])
        batches = make_batches(calibration, self.progress.batch_size, pad_id)
        if self.dist.enabled:  # this rank's share; statistics are all-reduced per block
            if len(batches) < self.dist.world_size:
                raise InputError(f"{len(batches)} calibration batches cannot feed {self.dist.world_size} ranks: "
                                 "use more samples or a smaller --batch-size")
            batches = [batches[j] for j in self.dist.batch_indices(len(batches))]
        skel.load_pre_block(torch.cat([b.ids.reshape(-1) for b in batches]), device, skel.dtype)
        calls, hidden = capture_block_calls(skel.model, skel.blocks, batches, device)
        if start_block > 0:  # resume: the saved outputs of the last finished block
            saved = torch.load(self.config.part / self._act_name(start_block), weights_only=True)
            if isinstance(saved, dict):  # saved beside the dense stream (_resume_payload)
                self.dense_stream = [h.to(device) for h in saved["dense_stream"]]
                saved = saved["hidden"]
            hidden = [h.to(device) for h in saved]
        self.t_capture = time.perf_counter() - t0
        self.timer.add("capture_s", self.t_capture)
        return batches, calls, hidden

    def _load(self, i: int):
        with self.timer.phase("read_s"):
            return self._load_now(i)

    def _load_now(self, i: int):
        cuda = self.device.type == "cuda"
        die_if_asked("read", i)
        if i in self._dropped():
            return {}, None  # never read
        tensors = self.skel.read_block(i, pin_memory=cuda)
        return to_device(tensors, self.device, self.copy_stream) if cuda else (tensors, None)

    def execute(self) -> None:
        if self.progress.finalized:
            return
        self.t_execute = time.perf_counter()
        skel, config, device, progress = self.skel, self.config, self.device, self.progress
        start = progress.blocks_done
        tuning = config.request.tuning
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        self.copy_stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.d2h_stream = torch.cuda.Stream(device) if device.type == "cuda" else None  # transfers.to_host
        batches, calls, hidden = [], [], []
        if config.needs_inputs and start < skel.num_blocks:
            batches, calls, hidden = self._prepare_inputs(start)
            plan = config.structured
            if plan is not None and (plan.blocks_remove or plan.experts_remove) and progress.structured is None:
                from ..structured.streaming import dense_pass  # block influence, expert saliency; then block 0

                progress.structured, hidden = dense_pass(skel, plan, device, batches, config.calibration.bucket_names,
                                                         calls, hidden)
                self.timer.add("structured_dense_pass_s", progress.structured["time_s"])
                self.save_progress()
            if config.layerwise is not None and progress.layerwise is None:  # OWL's dense pass, then block 0
                progress.layerwise, hidden = owl_pass(skel, config, self.dist, config.layerwise, batches, calls,
                                                      hidden)
                self.timer.add("owl_pass_s", progress.layerwise["time_s"])
                if self.dist.is_writer:
                    self.save_progress()
            if plan is not None and self.dense_stream is None and \
                    config.request.structured.options.follows_dense_stream(plan):
                if start > 0:  # the same options saved it with the inputs: never restart it from the cut stream
                    raise FeatpruneError(f"{config.part / self._act_name(start)} lacks the dense stream that "
                                         "--recovery-target model needs: delete the partial output and rerun")
                self.dense_stream = list(hidden)  # block 0's inputs: the dense and the cut stream agree
        writer = BackgroundWriter(tuning.background_nice)
        loader = background_pool("featprune-prefetch", tuning.background_nice)
        die_after = die_after_block()
        bar = None
        try:
            if not progress.shard0_done and self.dist.is_writer:
                writer.submit(self._write_shard0)
            if start < skel.num_blocks:
                from tqdm.auto import tqdm

                bar = tqdm(total=skel.num_blocks, initial=start, desc="pruning", unit="block",
                           file=sys.stderr, disable=not config.request.progress_bar or not self.dist.is_writer,
                           dynamic_ncols=True)
                nxt = loader.submit(self._load, start)
            for i in range(start, skel.num_blocks):
                t_block = time.perf_counter()
                try:
                    with self.timer.phase("wait_read_s"):
                        tensors, event = nxt.result()
                    if i + 1 < skel.num_blocks:
                        nxt = loader.submit(self._load, i + 1)  # prefetch while this block computes
                    hidden, next_hidden, entries, report = self._block(i, tensors, event, batches, calls, hidden)
                    next_hidden = self._resume_payload(next_hidden)
                except RuntimeError as exc:
                    raise block_error(exc, i, skel.block_prefix[i], self.device, progress.batch_size,
                                      config.part.name) from exc
                report["time_s"] = round(time.perf_counter() - t_block, 4)
                if self.dist.enabled:
                    # every rank's activations are on disk before rank 0 records the block as done
                    if not self.dist.is_writer and next_hidden is not None and next_hidden is not _NOT_A_RESUME_POINT:
                        atomic_save_torch(config.part / self._act_name(i + 1), next_hidden)
                    self.dist.barrier()
                if self.dist.is_writer:
                    with self.timer.phase("wait_write_s"):  # at most one block in flight: waits for the last one
                        writer.submit(self._write_block, i, entries, next_hidden, report)
                if bar is not None:
                    bar.set_postfix(peak_rss=f"{peak_rss_bytes() / 2**30:.2f}G", refresh=False)
                    bar.update(1)
                if die_after == i:
                    writer.wait()
                    os.kill(os.getpid(), signal.SIGKILL)
            with self.timer.phase("wait_write_s"):
                writer.wait()
        finally:
            if bar is not None:
                bar.close()
            loader.shutdown(wait=True, cancel_futures=True)
            writer.close()

    def _resume_payload(self, next_hidden):
        """What a resume point saves: the next block's inputs, with the dense stream when the run carries one."""
        if self.dense_stream is None or next_hidden is None or next_hidden is _NOT_A_RESUME_POINT:
            return next_hidden
        return {"hidden": next_hidden, "dense_stream": [h.to("cpu") for h in self.dense_stream]}

    def _dropped(self) -> list[int]:
        """The blocks --structured blocks= removes (chosen by the dense pass before the loop)."""
        return (self.progress.structured or {}).get("dropped_blocks", [])

    def _skip_block(self, i: int, hidden):
        """A block --structured drops: not read, not written; its inputs go to the next block."""
        next_hidden = None
        if i + 1 < self.skel.num_blocks:
            if not resume_point_due(self, i, hidden):
                next_hidden = _NOT_A_RESUME_POINT
            else:
                next_hidden = [h.to("cpu") for h in hidden] if self.device.type == "cuda" else hidden
        report = {"index": i, "time_s": 0.0, "sparsity": 0.0, "params": 0, "matrices": {}, "skipped": [],
                  "dropped": True, "peak_rss_bytes": peak_rss_bytes()}
        return hidden, next_hidden, None, report

    def _block(self, i: int, tensors, event, batches, calls, hidden):
        """Statistics, pruning and the pruned pass of block i: (its outputs, what to save of them,
        the shard entries, the layer report)."""
        skel, config, device = self.skel, self.config, self.device
        method = config.method
        if config.structured is not None and i in self._dropped():
            return self._skip_block(i, hidden)
        if event is not None:
            stream = torch.cuda.current_stream(device)
            stream.wait_event(event)
            for t in tensors.values():  # allocated on the copy stream, used and freed on this one
                t.record_stream(stream)
        linears = config.selection.pruned(i)  # the others are copied unchanged, like norms
        # Forward passes in another dtype than the stored one: prune the stored-precision weights
        # (so kept weights are written back bit for bit) and refresh the module's copy afterwards.
        keys = {skel.block_key(i, pl.param_name) for pl in linears}
        originals = {k: t for k, t in tensors.items() if k in keys and t.dtype != skel.dtype}
        with self.timer.phase("attach_s"):
            block = skel.attach_block(i, tensors, device, skel.dtype)
        cut = None
        if config.structured is not None:  # whole channels and groups first, on the stream of the cut blocks
            from ..structured.streaming import cut_block

            with self.timer.phase("structured_s", sync=True):
                rel, removed, self.dense_stream = cut_block(
                    skel, config.structured, config.request.structured.options, i, block, tensors, calls[i], hidden,
                    batches, config.calibration.bucket_names, device, self.dense_stream)
            cut = (rel, removed, tensors)
        del tensors
        stats = {}
        if method.needs_calibration and config.prunes_weights:  # the method asks for the statistics it needs
            with self.timer.phase("stats_s", sync=True):
                stats = method.collect_statistics(BlockStatistics(
                    i, skel.block_prefix[i], block, linears, calls[i], hidden, batches,
                    config.calibration.bucket_names, device, self.dist, self.call_orders, skel.dtype))
        die_if_asked("stats", i)
        with self.timer.phase("select_s", sync=True):
            layerwise = self.progress.layerwise
            sparsity = layerwise["target_sparsity"][i] if layerwise else config.sparsity
            entries, matrices = [], {}
            if config.prunes_weights:
                entries, matrices = prune_block_matrices(self, i, linears, stats, originals, sparsity)
            if cut is not None:
                entries, matrices = self._structured_entries(i, linears, cut, matrices)
        del originals
        next_hidden = None
        if config.needs_inputs and i + 1 < skel.num_blocks:
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
                  "matrices": matrices, "skipped": config.selection.skipped[i], "peak_rss_bytes": peak_rss_bytes()}
        if layerwise:
            report["target_sparsity"] = layerwise["target_sparsity"][i]
        if cut is not None:
            report["structured"] = cut[1]
        if device.type == "cuda":
            report["peak_cuda_bytes"] = torch.cuda.max_memory_allocated(device)
        return hidden, next_hidden, entries, report

    def _structured_entries(self, i: int, linears, cut, matrices: dict):
        """Block i's shard after --structured's cut, under its new index, and the per-matrix report."""
        from ..structured.streaming import cut_block_shard

        if i in self.host_copies:  # the pruned matrices are read back from the block below
            self.host_copies.pop(i).synchronize()
        return cut_block_shard(self.skel, self.config.structured, self.progress.structured, i, linears, cut, matrices)

    def phases(self, t_start: float, t_final: float) -> dict:
        """Per-phase seconds (timing.py): main-thread phases, background busy time and main-thread waits."""
        self.timer.add("setup_s", (self.t_execute or t_final) - t_start)
        self.timer.add("finalize_s", time.perf_counter() - t_final)
        return self.timer.as_dict()
