"""The paper's feature analyses: per-layer hidden-state feature magnitudes (Figure 2) and the
overlap of large and small features across languages and translation directions (Figures 1, 3).

For each calibration condition (a bucket of a calibration spec: ``mono:fr``, ``mt:fr-en``, ...)
and each transformer block, the magnitude of feature f is the mean over samples of the L2 norm,
over that sample's real tokens, of the block's output hidden state in dimension f (padding never
counts). The overlap of condition A with condition B at ratio r is the share of A's top-r features
that are among B's bottom-r features (the paper's heatmaps: high values mean the features A relies
on most are the ones B barely uses).

The model is streamed one block at a time with the engine's own machinery (skeleton on the meta
device, captured block arguments, one block's weights in memory at once), so this runs on models
larger than RAM; ``stream=False`` loads the whole model instead (used as the test oracle).
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .._version import versions
from ..data.calibration import build_calibration, parse_spec
from ..data.languages import resolve
from ..engine import ModelSkeleton, capture_block_calls, make_batches, pad_id_for
from ..engine.checkpoint import Checkpoint
from ..engine.families import find_blocks
from ..errors import InputError
from ..files import atomic_write_json
from ..hub import resolve_model
from . import metrics
from .plots import plot_mt_vs_mono, plot_overlap, plot_top_features

__all__ = ["AnalysisError", "analyze", "condition_label", "default_spec", "feature_magnitudes", "format_summary",
           "overlap_matrix"]


class AnalysisError(InputError):
    """Bad input to an analysis (missing model or data, bad ratio, ...): `featprune` exits with 2."""


def default_spec(langs: Sequence[str]) -> str:
    """mono:L for every language, then mt:L-en for every non-English one (the paper's X-en)."""
    if not langs:
        raise AnalysisError("no languages given")
    try:
        resolved = [resolve(code) for code in langs]
    except ValueError as exc:
        raise AnalysisError(str(exc)) from None
    parts = [f"mono:{lang.locale}" for lang in resolved]
    parts += [f"mt:{lang.locale}-en" for lang in resolved if lang.iso1 != "en"]
    return "+".join(parts)


def condition_label(bucket: str) -> str:
    """'mono:zh_CN' -> 'zh', 'mt:fr-en' -> 'fr-en' (the paper's axis labels, lower case)."""
    kind, _, body = bucket.partition(":")

    def short(code: str) -> str:
        lang = resolve(code)
        return lang.iso1 if lang.iso1 and resolve(lang.iso1) is lang else lang.locale

    try:
        if kind == "mono":
            return short(body)
        if kind == "mt":
            # locales may contain '-' only as written by users; canonical names use '_'
            src, tgt = body.split("-", 1)
            return f"{short(src)}-{short(tgt)}"
    except ValueError:
        pass
    return bucket


# ---------------------------------------------------------------------------------- magnitudes
def _accumulate(sums: torch.Tensor, hidden: torch.Tensor, mask: torch.Tensor, bucket: int) -> None:
    sums[bucket] += metrics.feature_l2_norms(hidden, mask).sum(dim=0).cpu()


def _streamed(model_dir: Path, calibration, device: torch.device, batch_size: int, progress: bool):
    """Block outputs via the engine's skeleton: one block's weights in memory at a time."""
    from tqdm.auto import tqdm

    ckpt = Checkpoint(model_dir)
    try:
        skel = ModelSkeleton(ckpt)
        pad_id = pad_id_for(skel.config, ckpt.info(skel.embedding_key).shape[0])
        batches = make_batches(calibration, batch_size, pad_id)
        skel.load_pre_block(torch.cat([b.ids.reshape(-1) for b in batches]), device, skel.dtype)
        calls, hidden = capture_block_calls(skel.model, skel.blocks, batches, device)
        features = hidden[0].shape[-1]
        sums = torch.zeros(skel.num_blocks, len(calibration.bucket_names), features, dtype=torch.float64)
        for i in tqdm(range(skel.num_blocks), desc="analyze", unit="block", file=sys.stderr, disable=not progress,
                      dynamic_ncols=True):
            block = skel.attach_block(i, skel.read_block(i), device, skel.dtype)
            hidden = [c.run(block, h) for c, h in zip(calls[i], hidden)]
            for h, b in zip(hidden, batches):
                _accumulate(sums[i], h, b.mask, b.bucket)
            skel.release_block(i)
            del block
        return sums
    finally:
        ckpt.close()


def _whole(model_dir: Path, calibration, device: torch.device, batch_size: int, progress: bool):
    """Block outputs from the whole model in memory, captured with forward hooks."""
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    _, blocks = find_blocks(model)
    pad_id = pad_id_for(model.config, model.get_input_embeddings().weight.shape[0])
    batches = make_batches(calibration, batch_size, pad_id)
    features = model.get_input_embeddings().weight.shape[1]
    sums = torch.zeros(len(blocks), len(calibration.bucket_names), features, dtype=torch.float64)
    current = {}

    def hook_for(i):
        def hook(module, args, out):
            h = out[0] if isinstance(out, (tuple, list)) else out
            _accumulate(sums[i], h, current["mask"], current["bucket"])
        return hook

    handles = [blk.register_forward_hook(hook_for(i)) for i, blk in enumerate(blocks)]
    try:
        for b in tqdm(batches, desc="analyze", unit="batch", file=sys.stderr, disable=not progress,
                      dynamic_ncols=True):
            current.update(mask=b.mask.to(device), bucket=b.bucket)
            model(input_ids=b.ids.to(device), attention_mask=b.mask.to(device=device, dtype=torch.long),
                  use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return sums


@torch.no_grad()
def feature_magnitudes(model_dir, calibration, *, device: str = "cpu", batch_size: int = 4, stream: bool = True,
                       progress: bool = True) -> np.ndarray:
    """[layers, conditions, features]: mean over each condition's samples of the per-sample L2
    norm over real tokens of every block's output, feature by feature (the paper's Figure 2)."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise AnalysisError(f"{model_dir} is not a model directory (no config.json)")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AnalysisError("device cuda was asked for, but torch sees no CUDA device")
    sums = (_streamed if stream else _whole)(model_dir, calibration, dev, batch_size, progress)
    counts = torch.tensor([sum(1 for b in calibration.buckets if b == k) for k in range(len(calibration.bucket_names))],
                          dtype=torch.float64)
    return (sums / counts[None, :, None]).numpy()


def overlap_matrix(mags: np.ndarray, ratio: float, kind: str = "top-bottom") -> np.ndarray:
    """[K, F] magnitudes of K conditions at one layer -> [K, K]: entry (a, b) is the share of a's
    top-ratio features among b's bottom-ratio features ('top-bottom') or top-ratio ('top-top')."""
    fn = {"top-bottom": metrics.top_bottom_overlap, "top-top": metrics.top_top_overlap}.get(kind)
    if fn is None:
        raise AnalysisError(f"unknown overlap kind {kind!r}; use 'top-bottom' or 'top-top'")
    k = mags.shape[0]
    return np.array([[fn(mags[a], mags[b], ratio) for b in range(k)] for a in range(k)])


# -------------------------------------------------------------------------------------- outputs
def _write_magnitudes_csv(path: Path, mags: np.ndarray, names: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["condition", "layer"] + [f"dim{i}" for i in range(mags.shape[2])])
        for k, name in enumerate(names):
            for layer in range(mags.shape[0]):
                w.writerow([name, layer] + [f"{v:.6g}" for v in mags[layer, k]])


def _write_overlap_csv(path: Path, mats: dict[str, np.ndarray], labels: list[str], ratio: float) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["kind", "ratio", "layer", "top_of", "compared_with", "share"])
        for kind, mat in mats.items():
            for layer in range(mat.shape[0]):
                for a, la in enumerate(labels):
                    for b, lb in enumerate(labels):
                        w.writerow([kind, ratio, layer, la, lb, f"{mat[layer, a, b]:.6f}"])


# ------------------------------------------------------------------------------------ the command
def analyze(model_dir, out_dir, *, spec: Optional[str] = None, langs: Optional[Sequence[str]] = None, data=None,
            nsamples: int = 20, seqlen: int = 512, shots: int = 4, seed: int = 0, device: str = "cpu",
            ratios: Sequence[float] = (0.3,), top: int = 20, batch_size: int = 4, stream: bool = True,
            threads: Optional[int] = None, progress: bool = True, plots: bool = True) -> dict:
    """Run the analysis and write CSV, PNG and analysis.json under out_dir; returns the summary.

    spec: a calibration spec (each component is one condition); or langs: mono:L and mt:L-en for
    each. nsamples: samples per condition (the paper used 100).
    """
    from transformers import AutoTokenizer

    t0 = time.perf_counter()
    if (spec is None) == (langs is None):
        raise AnalysisError("give either a calibration spec (--calib) or --langs, not both or neither")
    spec = spec if spec is not None else default_spec(langs)
    if not isinstance(nsamples, int) or nsamples < 1:
        raise AnalysisError(f"nsamples must be a positive integer, got {nsamples!r}")
    for r in ratios:
        if not 0 < r <= 0.5:
            raise AnalysisError(f"ratio must be in (0, 0.5] so top and bottom sets are disjoint within a condition, "
                                f"got {r}")
    model_dir, out_dir = resolve_model(model_dir), Path(out_dir)  # a hub id: its cached or downloaded snapshot
    if not (model_dir / "config.json").is_file():
        raise AnalysisError(f"{model_dir} is not a model directory (no config.json)")
    if data is not None and not Path(data).exists():
        raise AnalysisError(f"data path does not exist: {data}")
    if threads is not None:
        torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(model_dir)
    try:
        k = len(parse_spec(spec))
        calibration = build_calibration(spec, tok, data=data, nsamples=nsamples * k, seqlen=seqlen, shots=shots,
                                        seed=seed)
    except (ValueError, FileNotFoundError) as exc:
        raise AnalysisError(str(exc)) from None
    t_data = time.perf_counter() - t0
    mags = feature_magnitudes(model_dir, calibration, device=device, batch_size=batch_size, stream=stream,
                              progress=progress)
    t_model = time.perf_counter() - t0 - t_data
    names = list(calibration.bucket_names)
    labels = [condition_label(n) for n in names]
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_magnitudes_csv(out_dir / "magnitudes.csv", mags, names)
    overlaps = {}
    # One condition's overlap with itself is trivially 100% (or 0%): nothing to draw.
    overlap_note = None if len(names) > 1 else (
        f"overlap needs two or more conditions (only {names[0]} given): no overlap table or heatmap; "
        f"{'magnitudes and their plots' if plots else 'magnitudes'} written")
    for r in ratios if overlap_note is None else ():
        pct = f"{r * 100:g}"
        mats = {kind: np.stack([overlap_matrix(mags[layer], r, kind) for layer in range(mags.shape[0])])
                for kind in ("top-bottom", "top-top")}
        _write_overlap_csv(out_dir / f"overlap_r{pct}.csv", mats, labels, r)
        overlaps[pct] = {kind: {"mean_over_layers": np.round(m.mean(axis=0), 4).tolist()} for kind, m in mats.items()}
        if plots:
            for kind, m in mats.items():
                plot_overlap(out_dir / f"overlap_{kind}_r{pct}_mean.png",
                             out_dir / f"overlap_{kind}_r{pct}_layers.png", m, labels, r, kind)
    if plots:
        plot_mt_vs_mono(out_dir / "mt_vs_mono_features.png", mags, names, top)
        (out_dir / "top_features").mkdir(exist_ok=True)
        for k_idx, label in enumerate(labels):
            plot_top_features(out_dir / "top_features" / f"{label.replace(':', '_')}.png", mags[:, k_idx], label,
                              top)
    summary = {
        "format": "featprune-analysis", "version": 1, "model": str(model_dir.resolve()), "spec": spec,
        "conditions": names, "labels": labels, "layers": int(mags.shape[0]), "features": int(mags.shape[2]),
        "definition": "per condition and block output: mean over samples of each feature's L2 norm over the "
                      "sample's real tokens (padding excluded)",
        "calibration": calibration.describe(), "ratios": list(ratios), "overlap": overlaps,
        "overlap_note": overlap_note,
        "top_features": {label: [[int(i) for i in np.argsort(-mags[layer, k_idx], kind="stable")[:top]]
                                 for layer in range(mags.shape[0])] for k_idx, label in enumerate(labels)},
        "outliers": _outlier_summary(mags, labels),
        "stream": stream, "device": device,
        "timings": {"data_s": round(t_data, 3), "model_s": round(t_model, 3),
                    "total_s": round(time.perf_counter() - t0, 3)},
        "versions": versions(),
    }
    atomic_write_json(out_dir / "analysis.json", summary, sort_keys=False, mkdir=True)
    return summary


def _outlier_summary(mags: np.ndarray, labels: list[str]) -> dict:
    """Per condition and layer: the largest feature, its magnitude and its ratio to the median
    feature (the paper's 'few features with very large magnitudes')."""
    out = {}
    for k, label in enumerate(labels):
        rows = []
        for layer in range(mags.shape[0]):
            v = mags[layer, k]
            top = int(np.argmax(v))
            med = float(np.median(v))
            rows.append({"layer": layer, "feature": top, "magnitude": float(v[top]),
                         "ratio_to_median": float(v[top] / med) if med > 0 else None})
        out[label] = rows
    return out


def format_summary(summary: dict, max_layers: int = 6) -> str:
    """Markdown for stdout: the largest features per condition at a few layers, and the mean
    top-bottom overlap between each language's mono and mt conditions."""
    labels, layers = summary["labels"], summary["layers"]
    shown = sorted(set(np.linspace(0, layers - 1, min(max_layers, layers)).round().astype(int).tolist()))
    head = "| condition | " + " | ".join(f"layer {layer}: top feature (x median)" for layer in shown) + " |"
    lines = [head, "|" + "---|" * (len(shown) + 1)]
    for label in labels:
        cells = []
        for layer in shown:
            o = summary["outliers"][label][layer]
            ratio = f"{o['ratio_to_median']:.0f}x" if o["ratio_to_median"] else "n/a"
            cells.append(f"{o['feature']} ({ratio})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if summary.get("overlap_note"):
        lines += ["", summary["overlap_note"]]
    for pct, mats in summary["overlap"].items():
        mean = np.array(mats["top-bottom"]["mean_over_layers"])
        lines.append("")
        lines.append(f"top-{pct}% of row among bottom-{pct}% of column, mean over layers (%):")
        lines.append("| top of \\ bottom of | " + " | ".join(labels) + " |")
        lines.append("|" + "---|" * (len(labels) + 1))
        for a, la in enumerate(labels):
            lines.append(f"| {la} | " + " | ".join(f"{100 * mean[a, b]:.0f}" for b in range(len(labels))) + " |")
    return "\n".join(lines)
