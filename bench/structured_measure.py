"""Measurements for bench_structured.py: speed as CPU-time ratios against dense, translation-choice accuracy,
and the quality-per-removed-parameter plot.

Speed depends only on a cut's shapes. It is measured as this process's CPU seconds with one intra-op
thread, dense and cut interleaved (dense, cut, dense, cut, ...) after one warm-up each: the work per token,
which the other processes' load on a shared machine does not inflate as it does wall time.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

TC_TASK = "translation-choice"


@torch.no_grad()
def decode_seconds(model, prompt: torch.Tensor, new_tokens: int) -> float:
    t = time.perf_counter()
    model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                   min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    return time.perf_counter() - t


@torch.no_grad()
def prefill(model, ids: torch.Tensor) -> None:
    # What generate's first step computes: the whole prompt through the body, logits of the last position only
    # (Gemma 3's 262k-entry output matrix would otherwise dominate).
    model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False, logits_to_keep=1)


def _interleaved_cpu_seconds(dense_fn, cut_fn, rounds: int) -> tuple[float, float]:
    """Summed CPU seconds of `rounds` calls of each, interleaved, one intra-op thread, after a warm-up each."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dense_fn()
        cut_fn()
        td = tc = 0.0
        for _ in range(rounds):
            t = time.process_time()
            dense_fn()
            td += time.process_time() - t
            t = time.process_time()
            cut_fn()
            tc += time.process_time() - t
    finally:
        torch.set_num_threads(threads)
    return td, tc


def decode_cpu_ratio(dense, cut, prompt: torch.Tensor, new_tokens: int, rounds: int) -> dict:
    """Greedy decode tokens per CPU second of each (the warm-up decodes the same count)."""
    td, tc = _interleaved_cpu_seconds(lambda: decode_seconds(dense, prompt, new_tokens),
                                      lambda: decode_seconds(cut, prompt, new_tokens), rounds)
    n = prompt.shape[0] * new_tokens * rounds
    return {"batch": prompt.shape[0], "new_tokens": new_tokens, "rounds": rounds, "threads": 1,
            "dense_tok_per_cpu_s": round(n / td, 2), "cut_tok_per_cpu_s": round(n / tc, 2),
            "speedup": round(td / tc, 3)}


def prefill_cpu_ratio(dense, cut, batch: int, tokens: int, vocab: int, rounds: int) -> dict:
    """Prompt tokens per CPU second of one forward over batch x tokens (random token ids: the work per token
    does not depend on which tokens they are)."""
    ids = torch.randint(10, vocab - 1, (batch, tokens), generator=torch.Generator().manual_seed(0))
    td, tc = _interleaved_cpu_seconds(lambda: prefill(dense, ids), lambda: prefill(cut, ids), rounds)
    n = batch * tokens * rounds
    return {"batch": batch, "tokens": tokens, "rounds": rounds, "threads": 1,
            "dense_tok_per_cpu_s": round(n / td, 2), "cut_tok_per_cpu_s": round(n / tc, 2),
            "speedup": round(td / tc, 3)}


def parse_shapes(texts: list[str]) -> list[tuple[int, int]]:
    """["1x512", "8x128"] -> [(1, 512), (8, 128)]."""
    return [tuple(int(x) for x in t.lower().split("x")) for t in texts]


def translation_choice(model_dir: Path, langs: list[str], limit: int) -> dict:
    """The study's evaluator on `limit` items per language of this machine's gettext evaluation split (disjoint
    from the calibration split by construction), seed 0: the same items and candidates for every model.
    Per language: accuracy (summed log-probability, the evaluator's primary), its standard error, the
    per-token accuracy, and each item's correctness in item order (for paired tests between arms)."""
    from featprune_ext.study.runner import evaluate

    result = evaluate(model_dir, TC_TASK, langs, None, limit=limit, seed=0, threads=1, progress=False, n_boot=200)
    out = {}
    for lang, r in result["languages"].items():
        out[lang] = {"n": r["n"], "acc": round(r["acc"], 4), "acc_stderr": round(r["acc_stderr"], 4),
                     "acc_alt": round(r["acc_alt"], 4), "ids": [it["id"] for it in r["items"]],
                     "correct": "".join("1" if it["correct"] else "0" for it in r["items"])}
    out["seconds"] = result["timings"]["total_s"]
    return out


def tc_cell(tc: dict, lang: str, dense_tc: dict | None) -> str:
    """'61.7 ±6.3, p=0.02; 90.0': accuracy %, its standard error, the exact McNemar p against dense on the same
    items, and the per-token accuracy % (the study's other length convention)."""
    from featprune_ext.study.metrics import mcnemar_exact

    r = tc[lang]
    cell = f"{100 * r['acc']:.1f} ±{100 * r['acc_stderr']:.1f}"
    if dense_tc is not None and dense_tc[lang]["ids"] == r["ids"] and dense_tc is not tc:
        p = mcnemar_exact([c == "1" for c in dense_tc[lang]["correct"]], [c == "1" for c in r["correct"]])["p_value"]
        cell += f", p={p:.2g}"
    return cell + f"; {100 * r['acc_alt']:.1f}"


def tc_mean(tc: dict, langs: list[str]) -> float:
    return sum(tc[lang]["acc"] for lang in langs) / len(langs)


def plot(results: dict, path: str) -> None:
    """Quality vs fraction of parameters removed, one point per arm: held-out English perplexity / dense and,
    where measured, mean translation-choice accuracy (a second panel). Unstructured rows (no size gain) sit
    at 0 removed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    d = results["dense"]
    langs = results.get("setup", {}).get("tc_langs")
    panels = 2 if langs and "tc" in d else 1
    fig, axes = plt.subplots(1, panels, figsize=(7.5 * panels, 4.8), squeeze=False)
    markers = {"none": "o", "ls": "s", "adam": "^"}
    colors = {"mlp": "tab:blue", "heads": "tab:orange", "blocks": "tab:green", "combo": "tab:red",
              "sparsity": "tab:gray"}
    y_max = 60.0
    stacked: dict[float, int] = {}  # off-scale labels at the same x, stacked downwards
    for a in results["arms"]:
        kinds = [p.split("=")[0] for p in a["spec"].split(",")]
        kind = kinds[0] if len(kinds) == 1 else "combo"
        x = 1 - a["params"] / d["params"]
        label = a["spec"].replace(",", "+") + (" (unstructured)" if kind == "sparsity" else "")
        if a["recovery"] == "adam" and (a["options"] or {}).get("target"):
            label += f" [target {a['options']['target']}]"
        face = colors[kind] if a["score"] == "wanda" or kind == "blocks" else "none"
        marker = "*" if kind == "sparsity" else markers[a["recovery"]]
        offset = (3, -9 if a["recovery"] == "adam" else 3)
        y = a["ppl"]["en"] / d["ppl"]["en"]
        text = label
        ax = axes[0][0]
        if y > y_max:  # off the scale (the magnitude score): drawn at the top edge with its value
            text, y = f"{label}: {y:.0f}x (off scale)", y_max
            k = stacked[round(x, 3)] = stacked.get(round(x, 3), -1) + 1
            offset = (6, 3 - 8 * k)
        ax.scatter([x], [y], marker=marker, edgecolors=colors[kind], facecolors=face, s=60)
        ax.annotate(text, (x, y), fontsize=6, xytext=offset, textcoords="offset points")
        if panels == 2 and "tc" in a:
            y2 = 100 * tc_mean(a["tc"], langs)
            axes[0][1].scatter([x], [y2], marker=marker, edgecolors=colors[kind], facecolors=face, s=60)
            axes[0][1].annotate(label, (x, y2), fontsize=6, xytext=offset, textcoords="offset points")
    ax = axes[0][0]
    ax.set_yscale("log")
    ax.set_ylim(0.9, y_max * 1.3)
    ax.set_ylabel("held-out English perplexity / dense")
    ax.set_title(f"{results['setup']['model']}: quality per removed parameter")
    if panels == 2:
        ax2 = axes[0][1]
        ax2.axhline(100 * tc_mean(d["tc"], langs), color="black", linewidth=0.8, label="dense")
        ax2.axhline(25, color="gray", linestyle=":", linewidth=0.8, label="chance")
        ax2.legend(fontsize=7, loc="lower left")
        ax2.set_ylabel(f"translation-choice accuracy %, mean of {', '.join(langs)}")
        ax2.set_title(f"{results['setup']['model']}: translation-choice ({d['tc'][langs[0]]['n']} items per language)")
    handles = [Line2D([], [], color=c, marker="*" if k == "sparsity" else "o", linestyle="",
                      label="unstructured (no size gain)" if k == "sparsity" else k) for k, c in colors.items()]
    handles += [Line2D([], [], color="gray", marker=m, linestyle="", label=f"recovery {k}") for k, m in markers.items()]
    handles += [Line2D([], [], color="gray", marker="o", markerfacecolor="none", linestyle="", label="magnitude score")]
    for row in axes:
        for axis in row:
            axis.set_xlabel("fraction of parameters removed")
            axis.set_xlim(left=-0.01)  # unstructured rows sit at 0
            axis.grid(True, which="both", alpha=0.3)
    ax.legend(handles=handles, fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
