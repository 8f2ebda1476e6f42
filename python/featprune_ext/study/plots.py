"""Every figure of the study (matplotlib, files only, never a display).

* plot_top_features: one condition's largest hidden-state features, one panel per layer (analysis).
* plot_overlap: top/bottom feature overlap heatmaps, mean over layers and per layer (analysis).
* plot_compare: several models' headline metric per language with bootstrap intervals (compare).

matplotlib is imported on first use, so importing this module is cheap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .tasks import primary_metric

__all__ = ["plot_compare", "plot_overlap", "plot_top_features"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


# ------------------------------------------------------------------------------------ analysis
def _layer_grid(plt, layers: int, cell_w: float, cell_h: float):
    """A figure with one panel per layer, 6 per row; returns it and the (layer, axes) pairs in use
    (panels past the last layer are switched off)."""
    cols = min(6, layers)
    rows = (layers + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cell_w * cols, cell_h * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[layers:]:
        ax.axis("off")
    return fig, list(enumerate(flat[:layers]))


def plot_top_features(path: Path, mags_k: np.ndarray, label: str, top: int) -> None:
    plt = _plt()
    fig, per_layer = _layer_grid(plt, mags_k.shape[0], 3.2, 2.4)
    for layer, ax in per_layer:
        v = mags_k[layer]
        order = np.argsort(-v, kind="stable")[:top]
        ax.bar(range(len(order)), v[order], color="tab:blue")
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels([str(i) for i in order], rotation=90, fontsize=5)
        ax.tick_params(axis="y", labelsize=6)
        ax.set_title(f"layer {layer}", fontsize=8)
    fig.suptitle(f"{label}: top-{top} hidden-state features per layer (mean over samples of L2 norm over tokens)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def mt_mono_pairs(names: list[str]) -> list[tuple[str, int, int]]:
    """(language, index of mono:L, index of mt:L-en) for every language with both conditions."""
    mono = {n.split(":", 1)[1]: i for i, n in enumerate(names) if n.startswith("mono:")}
    pairs = []
    for i, n in enumerate(names):
        if n.startswith("mt:") and n.endswith("-en"):
            lang = n[3:-3]
            if lang in mono:
                pairs.append((lang, mono[lang], i))
    return pairs


def plot_mt_vs_mono(path: Path, mags: np.ndarray, names: list[str], top: int = 20) -> bool:
    """The paper's Figure 1 question side by side: per language (rows) and for an early, a middle
    and the last block (columns), the `top` largest features under translation demonstrations (mt)
    with the same features' magnitudes under monolingual text (mono), on one axis. Returns False
    when no language has both conditions."""
    pairs = mt_mono_pairs(names)
    if not pairs:
        return False
    plt = _plt()
    layers = sorted({1, mags.shape[0] // 2, mags.shape[0] - 1} & set(range(mags.shape[0])))
    fig, axes = plt.subplots(len(pairs), len(layers), figsize=(3.6 * len(layers), 2.4 * len(pairs)), squeeze=False)
    for row, (lang, i_mono, i_mt) in enumerate(pairs):
        for col, layer in enumerate(layers):
            ax = axes[row][col]
            order = np.argsort(-mags[layer, i_mt], kind="stable")[:top]
            x = np.arange(len(order))
            ax.bar(x - 0.2, mags[layer, i_mt, order], width=0.4, color="tab:red", label=f"mt:{lang}-en")
            ax.bar(x + 0.2, mags[layer, i_mono, order], width=0.4, color="tab:blue", label=f"mono:{lang}")
            ax.set_xticks(x)
            ax.set_xticklabels([str(i) for i in order], rotation=90, fontsize=5)
            ax.tick_params(axis="y", labelsize=6)
            ax.set_title(f"{lang}, layer {layer}", fontsize=8)
            if row == 0 and col == 0:
                ax.legend(fontsize=6)
    fig.suptitle(f"top-{top} features under translation demonstrations (red) and the same features under "
                 "monolingual text (blue): mean over samples of the L2 norm over tokens", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _plot_heatmap(ax, mat: np.ndarray, labels: list[str], title: str, annotate: bool, vmax: float) -> object:
    im = ax.imshow(mat * 100, vmin=0, vmax=vmax * 100, cmap="viridis")
    ax.set_xticks(range(len(labels)))
    ax.set_yticks(range(len(labels)))
    fs = 7 if annotate else 5
    ax.set_xticklabels(labels, rotation=90, fontsize=fs)
    ax.set_yticklabels(labels, fontsize=fs)
    ax.set_title(title, fontsize=8)
    if annotate:
        for a in range(len(labels)):
            for b in range(len(labels)):
                ax.text(b, a, f"{mat[a, b] * 100:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if mat[a, b] < vmax * 0.6 else "black")
    return im


def plot_overlap(path_mean: Path, path_layers: Path, mat: np.ndarray, labels: list[str], ratio: float,
                  kind: str) -> None:
    plt = _plt()
    pct = int(round(ratio * 100))
    ylabel = f"top-{pct}% features of"
    xlabel = f"{'bottom' if kind == 'top-bottom' else 'top'}-{pct}% features of"
    vmax = max(float(mat.max()), 1e-6)
    fig, ax = plt.subplots(figsize=(1.0 + 0.5 * len(labels), 0.8 + 0.5 * len(labels)))
    im = _plot_heatmap(ax, mat.mean(axis=0), labels, f"{kind} overlap (%), mean over {mat.shape[0]} layers", True, vmax)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_xlabel(xlabel, fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path_mean, dpi=120)
    plt.close(fig)
    fig, per_layer = _layer_grid(plt, mat.shape[0], 3.0, 3.0)
    for layer, ax in per_layer:
        _plot_heatmap(ax, mat[layer], labels, f"layer {layer}", len(labels) <= 6, vmax)
    fig.suptitle(f"share (%) of the row condition's {ylabel.split(' features')[0]} features among the column "
                 f"condition's {xlabel.split(' features')[0]} features", fontsize=10)
    fig.tight_layout()
    fig.savefig(path_layers, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------- compare
def plot_compare(path: Path, task: str, results: list[dict], names: list[str]) -> None:
    """Bars per language and model with 95% bootstrap intervals (compare.<task>.png); a chance line for
    accuracy, a log scale for perplexity."""
    plt = _plt()

    key, direction = primary_metric(task)
    langs = list(dict.fromkeys(lang for r in results for lang in r["languages"]))
    width = 0.8 / len(results)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(langs) * len(results) * 0.35 + 2), 4))
    scale = 100 if key == "acc" else 1
    for j, (r, name) in enumerate(zip(results, names)):
        xs, ys, lo, hi = [], [], [], []
        for i, lang in enumerate(langs):
            s = r["languages"].get(lang)
            if s is None:
                continue
            xs.append(i + (j - (len(results) - 1) / 2) * width)
            ys.append(s[key] * scale)
            ci = s.get(f"{key}_ci") or [s[key], s[key]]
            lo.append((s[key] - ci[0]) * scale)
            hi.append((ci[1] - s[key]) * scale)
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=name)
    ax.set_xticks(range(len(langs)))
    ax.set_xticklabels(langs)
    label = {"acc": "accuracy (%)", "ppl": "perplexity (log scale)", "chrf": "chrF"}[key]
    ax.set_ylabel(f"{label}, {'lower' if direction == 'lower' else 'higher'} is better")
    if key == "ppl":
        ax.set_yscale("log")
    if key == "acc":
        chance = [results[0]["languages"][lang].get("chance") for lang in langs if lang in results[0]["languages"]]
        if chance and chance[0]:
            ax.axhline(100 * chance[0], color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_title(f"{task}: 95% bootstrap intervals")
    ax.legend(fontsize=7, ncol=min(3, len(results) + 1))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
