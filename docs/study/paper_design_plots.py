"""Figures of the paper-design study (docs/study/run_paper_design.py analyze): the primary metric
against sparsity per method and language, and the paper's question (mt:X-en minus mono:X) as one
interval per language and sparsity, marked where the Holm-adjusted test decides."""

from __future__ import annotations

from pathlib import Path

from featprune_ext.study.plots import _plt as _pyplot  # Agg backend: files only

UNITS = {"translate": "chrF", "translation-choice": "accuracy %", "ppl": "nats / token"}


def plot(rows: list[dict], out: Path, tasks, langs_order, cross_langs) -> None:
    """Primary metric vs sparsity, per task and language, one line per method, 95% CIs as bars; and
    the same for the fr-calibrated models on the other languages (cross-lingual)."""
    plt = _pyplot()
    # one colour per method in every panel (matplotlib's cycle would recolour a method wherever
    # another one is missing, and the legend is drawn in the first panel only)
    own = [("mt", "o-", "C0"), ("mono", "s--", "C1"), ("contrastive", "^-.", "C2"), ("magnitude", "x:", "C3")]
    for model in sorted({r["model"] for r in rows}):
        for task in tasks:
            for cross in (False, True):
                sel = [r for r in rows if r["model"] == model and r["task"] == task]
                if cross:
                    sel = [r for r in sel if r["method"] == "dense" or r["calib_lang"] == "fr"]
                    langs = [lang for lang in cross_langs
                             if any(r["lang"] == lang and r["method"] != "dense" for r in sel)]
                else:
                    langs = [lang for lang in langs_order if any(r["lang"] == lang and r["method"] != "dense"
                                                           and r["calib_lang"] in (lang, None) for r in sel)]
                if langs:
                    _plot_panels(plt, sel, langs, own, cross, task,
                                 out / f"{model}-{task}{'-cross-fr' if cross else ''}.png",
                                 f"{model}: {task}{', models calibrated on French' if cross else ''} (95% CI)")


def _plot_panels(plt, sel, langs, methods, cross, task, path, title) -> None:
    fig, axes = plt.subplots(1, len(langs), figsize=(3.2 * len(langs), 3.2), squeeze=False)
    for ax, lang in zip(axes[0], langs):
        dense = [r for r in sel if r["lang"] == lang and r["method"] == "dense"]
        for method, style, color in methods:
            pts = [r for r in sel if r["lang"] == lang and r["method"] == method
                   and r["calib_lang"] in (("fr",) if cross else (lang, None))]
            pts = sorted(dense + pts, key=lambda r: r["sparsity"])
            if len(pts) < 2:
                continue
            xs = [r["sparsity"] for r in pts]
            ys = [r["value"] for r in pts]
            err = [[y - r["ci"][0] for y, r in zip(ys, pts)], [r["ci"][1] - y for y, r in zip(ys, pts)]]
            ax.errorbar(xs, ys, yerr=err, fmt=style, color=color, capsize=2,
                        label=f"{method}{':fr' if cross else ''}")
        ax.set_title(lang)
        ax.set_xlabel("sparsity")
    axes[0][0].set_ylabel(UNITS[task])
    handles = {}  # every method drawn in any panel, so a method missing from the first is still named
    for ax in axes[0]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        axes[0][0].legend(handles.values(), handles.keys(), fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_paper_question(sel: list[dict], out: Path, langs_order) -> None:
    """Per model: mt:X-en minus mono:X with its 95% CI (the tests `paper_question` selects), one row
    per language and sparsity (and the French models on the other languages), one panel per task;
    filled where Holm p < 0.05."""
    plt = _pyplot()
    for model in sorted({t["model"] for t in sel}):
        mine = [t for t in sel if t["model"] == model]
        tasks = [task for task in UNITS if any(t["task"] == task for t in mine)]
        keys = sorted({(t.get("cross", False), langs_order.index(t["lang"]), t["lang"], t["sparsity"]) for t in mine})
        fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 0.32 * len(keys) + 1.6), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            for y, (cross, _, lang, sp) in enumerate(keys):
                t = next((t for t in mine if t["task"] == task and t["lang"] == lang and t["sparsity"] == sp
                          and t.get("cross", False) == cross), None)
                if t is None:
                    continue
                decided = t["p_holm"] < 0.05
                ax.errorbar([t["diff"]], [y], xerr=[[t["diff"] - t["ci"][0]], [t["ci"][1] - t["diff"]]],
                            fmt="o", color="C3" if decided else "C0", mfc=None if decided else "white", capsize=2)
            ax.axvline(0, color="grey", lw=0.8)
            ax.set_yticks(range(len(keys)))
            ax.set_yticklabels([f"{lang} {int(sp * 100)}%" + (" (fr-calibrated)" if cross else "")
                                for cross, _, lang, sp in keys], fontsize=7)
            better = "mt better <-" if task == "ppl" else "-> mt better"
            ax.set_xlabel(f"mt - mono, {UNITS[task]} ({better})")
            ax.set_title(task)
            ax.invert_yaxis()
        fig.suptitle(f"{model}: translation demonstrations vs monolingual text (95% CI; red: Holm p < 0.05)")
        fig.tight_layout()
        fig.savefig(out / f"{model}-mt-minus-mono.png", dpi=110)
        plt.close(fig)
