"""Layer-wise sparsity (OWL) in a streaming engine: a dense, statistics-only first pass.

OWL needs every block's outlier ratio before block 0 is pruned, and computes the ratios on the
dense model. So before the normal pass the engine streams the model once more: each block is
read, attached, run over the calibration batches with the statistics hooks (collect_stats; the
same forward also gives the dense outputs that feed the next block), its ratio is computed from
|W| * RMS(x) (methods/owl.py), and it is released. Cost: one extra read and one extra forward of
every block, with the same one-block memory bound (measured in docs/ARCHITECTURE.md).

The per-block targets are stored in progress.json (and the OWL settings in the fingerprint), so a
resumed run prunes with the targets of the run it continues; featprune.json gets them per layer
("target_sparsity") and at the top level ("layerwise").
"""

from __future__ import annotations

import time

import torch

from ..methods.owl import OWL, layer_sparsities, outlier_ratio
from .capture import capture_block_calls
from .stats import check_finite_stats, collect_stats

__all__ = ["owl_pass"]


def _block_ratio(linears, stats, base_buckets, m: float) -> tuple[float | None, int]:
    scores, params = [], 0
    for pl in linears:
        rms = stats[pl.name].rms(base_buckets)
        w = pl.weight_rows()
        scores.append(w.float().abs() * rms.to(w.device))  # Wanda's score, fp32 as the kernel computes it
        params += w.numel()
    if not params:
        return None, 0
    return outlier_ratio(scores, m), params


@torch.no_grad()
def owl_pass(skel, config, dist, owl: OWL, batches, calls, hidden) -> tuple[dict, list[torch.Tensor]]:
    """Stream the dense model once: (the layer-wise record: OWL's settings, ratios, per-block targets,
    time; what progress.json and featprune.json keep) and fresh inputs of block 0 for the pruning pass
    (the given `hidden` is consumed). config: the run's state.RunConfig."""
    device = config.device
    bucket_names = config.calibration.bucket_names
    base = config.method.base_buckets
    t0 = time.perf_counter()
    ratios, params = [], []
    for i in range(skel.num_blocks):
        tensors = skel.read_block(i)
        block = skel.attach_block(i, tensors, device, skel.dtype)
        del tensors
        linears = config.selection.pruned(i)
        outputs: list[torch.Tensor] | None = [] if i + 1 < skel.num_blocks else None
        stats = collect_stats(block, linears, calls[i], hidden, batches, bucket_names, device, outputs=outputs)
        dist.all_reduce_([t for st in stats.values() for t in (st.sumsq, st.count)],
                         [st.absmax for st in stats.values()])
        check_finite_stats(skel.block_prefix[i], i, linears, stats, skel.dtype)
        ratio, n = _block_ratio(linears, stats, base, owl.m)
        ratios.append(ratio)
        params.append(n)
        del stats
        hidden = outputs  # dense outputs feed the next block, as in OWL
        skel.release_block(i)
        del block
    targets = layer_sparsities(ratios, params, config.sparsity, owl.lam)
    info = {**owl.describe(), "outlier_ratio": ratios, "params": params, "target_sparsity": targets,
            "time_s": round(time.perf_counter() - t0, 4)}
    _, fresh = capture_block_calls(skel.model, skel.blocks, batches, device)  # embeddings only: cheap
    return info, fresh
