"""Comparing evaluation results: paired bootstrap tests item by item, and several models side by side.

compare_results tests one result against another on the items both have (matched by id), per
language: paired bootstrap of the task's headline metric (accuracy; log perplexity for ppl; corpus
chrF for translate). compare_models evaluates (or loads) several models on one task and writes the
side-by-side table, a JSON summary and a plot, each model tested against the first (the baseline).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..files import atomic_write_json
from ..tables import markdown_table
from . import metrics, plots
from .runner import evaluate, load_results
from .tasks import EvalError, primary_metric

__all__ = ["compare_models", "compare_results", "compare_summary", "compare_table", "display_names",
           "format_comparison"]


# ======================================================================================= two results
def _per_item(task: str, items: list[dict], key: str):
    if task == "ppl":  # tested as nats per token (log perplexity); see metrics._stat_fn
        return np.array([[it["nll"], it["tokens"]] for it in items], dtype=np.float64), "nll"
    if task == "translate":
        return None, None  # corpus metrics: handled with sacrebleu statistics
    return np.array([it["correct"] for it in items], dtype=np.float64), "mean"


def compare_results(a: dict, b: dict, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Paired bootstrap of a vs b on each language's items present in both (matched by id)."""
    if a["task"] != b["task"]:
        raise EvalError(f"cannot compare a {a['task']} result with a {b['task']} result")
    task = a["task"]
    key, direction = primary_metric(task)
    if task == "ppl":
        key = "nll_per_token"  # the paired test runs on log perplexity
    out = {"task": task, "metric": key, "better": direction, "a": a.get("name"), "b": b.get("name"),
           "languages": {}}
    for lang, sa in a["languages"].items():
        sb = b["languages"].get(lang)
        if sb is None:
            continue
        ib = {it["id"]: it for it in sb["items"]}
        pairs = [(it, ib[it["id"]]) for it in sa["items"] if it["id"] in ib]
        if not pairs:
            out["languages"][lang] = {"n": 0, "note": "no common items"}
            continue
        ia, ibb = [p[0] for p in pairs], [p[1] for p in pairs]
        if task == "translate":
            refs = [it["ref"] for it in ia]
            stats_a, fn = metrics.corpus_statistic("chrf", [it["hyp"] for it in ia], refs)
            stats_b, _ = metrics.corpus_statistic("chrf", [it["hyp"] for it in ibb], refs)
            res = metrics.paired_bootstrap(stats_a, stats_b, fn, n_boot=n_boot, seed=seed)
        else:
            xa, stat = _per_item(task, ia, key)
            xb, _ = _per_item(task, ibb, key)
            res = metrics.paired_bootstrap(xa, xb, stat, n_boot=n_boot, seed=seed)
        out["languages"][lang] = res
    if not out["languages"]:
        raise EvalError(f"the two results share no language ({list(a['languages'])} vs {list(b['languages'])})")
    return out


def format_comparison(cmp: dict) -> str:
    key = cmp["metric"]
    pct = key == "acc"
    scale = 100 if pct else 1
    if key == "nll_per_token":
        key = "nll/token (log ppl)"
    head = ["lang", "n", f"{key} A ({cmp['a']})", f"{key} B ({cmp['b']})", "A - B [95% CI]", "p (paired bootstrap)"]
    rows = []
    for lang, r in cmp["languages"].items():
        if not r.get("n"):
            rows.append([lang, 0, "", "", "", r.get("note", "")])
            continue
        rows.append([lang, r["n"], f"{r['a'] * scale:.2f}", f"{r['b'] * scale:.2f}",
                     f"{r['delta'] * scale:+.2f} [{r['ci'][0] * scale:+.2f}, {r['ci'][1] * scale:+.2f}]",
                     metrics.format_p(r["p_value"], r["n_boot"])])
    n_boot = next(iter(cmp["languages"].values())).get("n_boot", "")
    note = f"\n{cmp['better']} {key} is better; p is two-sided over {n_boot} resamples"
    return markdown_table(head, rows) + note


# ==================================================================================== several models
def display_names(models: Sequence, names: Optional[Sequence[str]] = None) -> list[str]:
    """One unique display name per model: `names` as given, else each directory's name (a saved
    JSON's file name without .json)."""
    models = [str(m) for m in models]
    if names is not None:
        names = list(names)
        if len(names) != len(models):
            raise EvalError(f"--names has {len(names)} names for {len(models)} models")
    else:
        names = [Path(m).stem if m.endswith(".json") else Path(m).name for m in models]
    if len(set(names)) != len(names):
        raise EvalError(f"display names must be unique, got {names}; pass --names")
    return names


def compare_table(task: str, results: list[dict], names: list[str], tests: list[Optional[dict]]) -> str:
    """Markdown: one row per model, one column per language (value [CI], and p vs the baseline)."""
    key, direction = primary_metric(task)
    scale, digits = (100, 1) if key == "acc" else (1, 2 if key == "ppl" else 1)
    langs = list(dict.fromkeys(lang for r in results for lang in r["languages"]))
    head = ["model"] + [f"{lang} {key}" for lang in langs]
    rows = []
    for r, name, test in zip(results, names, tests):
        row = [name]
        for lang in langs:
            s = r["languages"].get(lang)
            if s is None:
                row.append("")
                continue
            ci = s.get(f"{key}_ci")
            num = lambda v: f"{v * scale:.3g}" if v * scale >= 1e5 else f"{v * scale:.{digits}f}"  # noqa: E731
            cell = num(s[key])
            if ci:
                cell += f" [{num(ci[0])}, {num(ci[1])}]"
            t = (test or {}).get("languages", {}).get(lang)
            if t and t.get("n"):
                cell += f" p{'' if t['p_value'] <= 1 / (t['n_boot'] + 1) * (1 + 1e-9) else '='}" \
                        f"{metrics.format_p(t['p_value'], t['n_boot'])}"
            row.append(cell)
        rows.append(row)
    n = {lang: results[0]["languages"][lang]["n"] for lang in langs if lang in results[0]["languages"]}
    tested = " (tested on nats per token, i.e. log perplexity)" if key == "ppl" else ""
    per_lang = ", ".join(f"{lang} {c}" for lang, c in n.items())
    return (markdown_table(head, rows) + f"\n{direction} {key} is better; [95% bootstrap CI]; p: paired bootstrap vs "
            f"{names[0]} on common items{tested}; items per language: " + per_lang)


def compare_summary(task: str, results: list[dict], names: list[str], tests: list[Optional[dict]]) -> dict:
    """The JSON next to the table: every model's per-language summaries (items left out), RankC,
    the paired tests against the baseline (the first model) and timings."""
    return {"task": task, "models": names, "baseline": names[0],
            "results": {n: {lang: {k: v for k, v in s.items() if k != "items"} for lang, s in r["languages"].items()}
                        for n, r in zip(names, results)},
            "consistency": {n: r.get("consistency") for n, r in zip(names, results)},
            "paired_bootstrap_vs_baseline": {n: t for n, t in zip(names[1:], tests[1:])},
            "timings": {n: r["timings"] for n, r in zip(names, results)}}


def compare_models(models: Sequence, task: str, out_dir, *, names: Optional[Sequence[str]] = None,
                   langs: Optional[Sequence[str]] = None, data=None, reuse: bool = False, n_boot: int = 1000,
                   seed: int = 0, log: Optional[Callable[[str], None]] = None, **eval_kwargs) -> dict:
    """Evaluate (or load) every model on `task` and test each against the first.

    models: model directories and/or saved eval JSONs (paths ending in .json). An evaluated model's
    result goes to OUT/<name>.<task>.json; with reuse, an existing one is loaded instead (and `log`
    is told). Writes OUT/compare.<task>.md (the table), .json (compare_summary) and .png (the plot).
    eval_kwargs go to runner.evaluate. Returns {"names", "results", "tests", "table", "summary"}.
    """
    names = display_names(models, names)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for model, name in zip(map(str, models), names):
        cached = out / f"{name}.{task}.json"
        if model.endswith(".json"):
            res = load_results(model)
        elif reuse and cached.is_file():
            res = load_results(cached)
            if log is not None:
                log(f"reusing {cached}")
        else:
            if langs is None:
                raise EvalError("--langs is required (comma-separated, e.g. fr,es,zh_CN)")
            res = evaluate(model, task, langs, data, n_boot=n_boot, seed=seed, **eval_kwargs)
            atomic_write_json(cached, res, sort_keys=False, mkdir=True)
        if res["task"] != task:
            raise EvalError(f"{model} holds a {res['task']} result, not {task}")
        results.append(res)
    tests = [None] + [compare_results(r, results[0], n_boot=n_boot, seed=seed) for r in results[1:]]
    table = compare_table(task, results, names, tests)
    (out / f"compare.{task}.md").write_text(table + "\n", encoding="utf-8")
    summary = compare_summary(task, results, names, tests)
    atomic_write_json(out / f"compare.{task}.json", summary, sort_keys=False, mkdir=True)
    plots.plot_compare(out / f"compare.{task}.png", task, results, names)
    return {"names": names, "results": results, "tests": tests, "table": table, "summary": summary}
