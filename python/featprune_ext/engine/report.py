"""What a run reports: peak memory, the per-layer table printed at the end."""

from __future__ import annotations

import resource

__all__ = ["format_report_table", "numel", "peak_rss_bytes"]


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


def numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


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
