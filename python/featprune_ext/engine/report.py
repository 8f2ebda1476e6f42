"""What a run reports: featprune.json (built from the run's config and progress), peak memory, the
per-layer table printed at the end, and a failed block as one line that says where and what to change."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import torch

from .._version import versions
from ..errors import BlockError, InputError
from .batches import AUTO

__all__ = ["block_error", "format_report_table", "numel", "peak_rss_bytes", "reset_peak_rss", "run_report"]


def peak_rss_bytes() -> int:
    """This process's peak resident set. /proc's VmHWM first: ru_maxrss also counts the parent's
    memory at fork time when a large process (e.g. pytest) launched us with fork + exec."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> bool:
    """Restart this process's peak-RSS count from its current RSS (Linux: writing 5 to clear_refs
    resets VmHWM), so a run reports its own peak, not the process's: the demo builds a model in
    memory before it prunes. False where the kernel refuses; the peak is then the process's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def run_report(config, progress, skel, model_dir: Path, copied: list[str], t_capture: float, t_final: float,
               t_start: float, phases: dict) -> dict:
    """featprune.json: the run's config (state.RunConfig) and progress (state.Progress), the model, and
    the timings (seconds: capture, the blocks, finalize, total, and timing.py's phases)."""
    request, ckpt = config.request, skel.ckpt
    layers = sorted(progress.layers, key=lambda r: r["index"])
    params = sum(r["params"] for r in layers)
    return {
        "format": 1,
        "method": request.method.describe(),
        "sparsity": request.sparsity if request.pattern is None else 1 - config.n / config.m,
        "pattern": None if request.pattern is None else f"{config.n}:{config.m}",
        "calibration": config.calibration.describe() if request.method.needs_calibration else None,
        "model": {"source": str(model_dir), "architecture": skel.architecture, "model_code": skel.model_code,
                  "model_type": skel.config.model_type, "blocks": skel.num_blocks,
                  "blocks_path": skel.blocks_path, "dtype": str(skel.storage_dtype).replace("torch.", ""),
                  "compute_dtype": str(skel.dtype).replace("torch.", ""),
                  "tied_embeddings": skel.tied_embeddings, "unpruned_tensors": skel.other_keys,
                  "input_bytes": ckpt.file_bytes},
        "overall_sparsity": sum(r["sparsity"] * r["params"] for r in layers) / max(params, 1),
        "prunable_params": params,
        "layers": layers,
        "selection": config.selection.describe(),
        "layerwise": progress.layerwise,
        "skipped": config.selection.all_skipped(),
        **request.notes,
        "device": str(config.device),
        "batch_size": progress.batch_size,
        "batch_size_auto": request.batch_size == AUTO,
        "resumed_from_block": progress.resumed_from,
        "timings": {"capture_s": round(t_capture, 4),
                    "blocks_s": round(sum(r["time_s"] for r in layers), 4),
                    "finalize_s": round(time.perf_counter() - t_final, 4),
                    "total_s": round(time.perf_counter() - t_start, 4),
                    "phases": phases},
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_cuda_bytes": torch.cuda.max_memory_allocated(config.device) if config.device.type == "cuda" else None,
        "copied_files": copied,
        "versions": versions(),
        **_structured(config, progress, layers),
    }


def _structured(config, progress, layers) -> dict:
    """featprune.json's `structured` section, present only with --structured (structured/streaming.py)."""
    if config.structured is None:
        return {}
    from ..structured.streaming import report_section

    return {"structured": report_section(config.request.structured, config.structured, progress.structured, layers)}


def format_report_table(report: dict) -> str:
    """The per-layer summary printed at the end of `featprune prune`."""
    layerwise = bool(report.get("layerwise"))  # OWL: each block's own target next to what it got
    target = f"  {'target':>8}" if layerwise else ""
    lines = [f"{'block':>5}{target}  {'sparsity':>8}  {'time s':>7}  {'peak RSS GiB':>12}"]
    for r in report["layers"]:
        target = f"  {r.get('target_sparsity', float('nan')):>8.4f}" if layerwise else ""
        lines.append(f"{r['index']:>5}{target}  {r['sparsity']:>8.4f}  {r['time_s']:>7.2f}  "
                     f"{r['peak_rss_bytes'] / 2**30:>12.2f}")
    t = report["timings"]
    lines.append(f"total: {report['overall_sparsity']:.4f} sparsity over {report['prunable_params']:,} weights, "
                 f"{t['total_s']:.1f} s, peak RSS {report['peak_rss_bytes'] / 2**30:.2f} GiB")
    if layerwise:
        lw = report["layerwise"]
        lines.append(f"layer-wise sparsity: OWL (M={lw['m']:g}, lambda={lw['lambda']:g}), dense pass "
                     f"{lw['time_s']:.1f} s")
    if report.get("peak_cuda_bytes") is not None:
        lines.append(f"peak CUDA memory {report['peak_cuda_bytes'] / 2**30:.2f} GiB")
    return "\n".join(lines)


def block_error(exc: RuntimeError, i: int, prefix: str, device, batch_size: int, partial_name: str) -> BaseException:
    """A run-time failure inside block i as one line that says where and what to change."""
    if isinstance(exc, (InputError, BlockError)):
        return exc
    where = f"block {i} ({prefix.rstrip('.')})"
    done = (f"blocks 0-{i - 1} are saved in {partial_name}/: rerun with --resume to continue"
            if i > 0 else "no block was finished")
    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return BlockError(f"out of memory on {device} at {where}: lower --batch-size (now {batch_size})"
                          f", --seqlen or --nsamples, or free memory on the device; {done}")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return BlockError(f"{where} failed on {device}: {type(exc).__name__}: {first}; {done}")
