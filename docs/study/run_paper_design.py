"""The paper's design, rerun on this machine (issue 12; pre-registered in docs/study-gemma3-270m.md).

Per model (Gemma 3 270M, and SmolLM2 135M as the English-centric control), per language X and
sparsity: Wanda calibrated on the one pair X-en (`--preset paper`: 100 samples, 4 shots, 512 tokens),
on mono:X, and the contrastive variant (mt:X-en against code), plus dense and magnitude; each model
is evaluated on X (translate X->En, perplexity, translation-choice), and the ones calibrated on fr-en
and on mono:fr also on de, ru, zh_CN, hi (the cross-lingual question: do French translation
demonstrations help other languages more than French text alone?).

    featprune data gettext --langs fr,de,es,ru,zh_CN,ja,hi --extra-deb --out /tmp/fp_paper/data
    python docs/study/run_paper_design.py run      [--work /tmp/fp_paper] [--models gemma3 smollm2]
    python docs/study/run_paper_design.py analyze  [--work /tmp/fp_paper] [--out docs/study/paper-design]
        (also writes OUT/eval-items.tar.xz, every per-item result it read; to rerun the analysis
        from the repository: tar -xJf docs/study/paper-design/eval-items.tar.xz -C W, then --work W)
    python docs/study/run_paper_design.py features [--work /tmp/fp_paper] [--out docs/study/paper-design]
    python docs/study/run_paper_design.py masks    [--models gemma3] [--langs fr hi]  # mt vs mono masks, entry by entry

`run` goes cell by cell in the priority order of CELLS and is resumable: a cell whose evaluation
JSONs exist is skipped, and each pruned model is deleted once evaluated (fp32 Gemma is 1.1 GB).
Several workers can share the grid: each locks a cell (eval/MODEL/CELL.lock, featprune's RunLock:
an flock the kernel releases when the worker dies) before running it and skips cells another worker
holds; `--reverse` walks the grid from the end (for a second worker started beside one that
predates the locks).
`analyze` applies the pre-registered tests to whatever cells exist and says which are missing.
`features` runs `featprune analyze` (the paper's Figures 1-3: feature magnitudes and top/bottom
overlaps, 20 samples per condition) and compares mt with mono magnitudes against what the token
counts alone predict: the metric is an L2 norm over a sample's tokens, and an mt sample holds both
sides of each demonstration.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

LANGS = ["fr", "hi", "zh_CN", "de", "ru", "es", "ja"]  # priority: three resource levels first
CROSS = ["de", "ru", "zh_CN", "hi"]  # evaluated with the fr-en calibrated models
SPARSITIES = [0.5, 0.3]
METHODS = ["mt", "mono", "contrastive"]
# Items per language, sized for a 2-core CPU: translation-choice scores 4 candidates per item and the
# 262k-token head of Gemma makes each scored token cost about as much as the model body.
TASKS = {"translate": 16, "translation-choice": 60, "ppl": 50}
COMPARISONS = [("mt", "mono"), ("mt", "contrastive"), ("mt", "dense"), ("mt", "magnitude")]
N_BOOT = 10_000


def phase(c: dict) -> int:
    """Run order: the primary comparison (mt vs mono, with dense) at 50% in every language first, then
    at 30%, then magnitude, then the contrastive variant (two calibration passes: the slowest cell).
    The 2-core CPU cannot run the whole grid in one session, so an interrupted run should have the
    primary question answered in as many languages as possible."""
    if c["method"] == "dense":
        return 0
    if c["method"] in ("mt", "mono"):
        return 0 if c["sparsity"] == 0.5 else 1
    return 2 if c["method"] == "magnitude" else 3


def cells(models: list[str]) -> list[dict]:
    """Every cell of the design, in the order it is run (see `phase`; languages in LANGS order within
    a phase). A cell is one pruned (or dense) model evaluated on the languages in "eval"."""
    grid = _grid(models)
    return sorted(grid, key=lambda c: (phase(c), LANGS.index(c["eval"][0])))


def _grid(models: list[str]) -> list[dict]:
    out = []
    for lang in LANGS:
        cross = CROSS if lang == "fr" else []
        for model in models:
            out.append({"model": model, "method": "dense", "lang": None, "sparsity": 0.0, "eval": [lang] + cross})
            for sp in SPARSITIES:
                out.append({"model": model, "method": "magnitude", "lang": None, "sparsity": sp, "eval": [lang]})
                for method in METHODS:
                    out.append({"model": model, "method": method, "lang": lang, "sparsity": sp,
                                "eval": [lang] + (cross if method in ("mt", "mono") else [])})
    return out


def evaluations(c: dict) -> list[tuple[str, str]]:
    """(task, language) pairs of a cell. The cross-lingual languages of the fr models get the
    scoring tasks only: generation is the slow part, and the question there is about tasks other
    than translating the calibration pair."""
    return [(task, lang) for task in TASKS for lang in c["eval"]
            if not (task == "translate" and c["method"] in ("mt", "mono") and lang != c["lang"])]


def cell_name(c: dict) -> str:
    if c["method"] == "dense":
        return "dense"
    tail = f"-{c['lang']}" if c["lang"] else ""
    return f"{c['method']}{tail}-s{int(round(c['sparsity'] * 100))}"


def model_src(name: str) -> Path:
    from featprune_ext.data import zoo

    return {"gemma3": zoo.gemma3_270m_dir, "smollm2": zoo.smollm2_dir}[name]()


def prune_cell(c: dict, src: Path, out: Path, data: Path) -> dict:
    import featprune_ext

    kw = {"method": "magnitude" if c["method"] == "magnitude" else "wanda", "sparsity": c["sparsity"],
          "batch_size": 4, "progress": False}
    if c["method"] != "magnitude":
        calib = f"mono:{c['lang']}" if c["method"] == "mono" else f"mt:{c['lang']}-en"
        kw.update(preset="paper", calib=calib, data=data)
        if c["method"] == "contrastive":
            kw["contrast"] = "code"
        if c.get("seed"):  # another draw of demonstrations (the masks stage's control)
            kw["seed"] = c["seed"]
    for stale in (out, out.with_name(out.name + ".partial")):  # an interrupted earlier run of this cell
        shutil.rmtree(stale, ignore_errors=True)
    t0 = time.perf_counter()
    report = featprune_ext.prune(src, out, **kw)
    return {"prune_s": round(time.perf_counter() - t0, 1), "overall_sparsity": report["overall_sparsity"],
            "calibration_tokens": (report.get("calibration") or {}).get("tokens")}


def claim(cell: Path):
    """The lock of the cell whose path (without suffix) is `cell`, held by this worker until it
    releases it or dies; None when another worker holds it."""
    from featprune_ext.engine.lock import RunLock
    from featprune_ext.errors import InputError

    lock = RunLock(cell)
    try:
        lock.acquire()
    except InputError:
        return None
    return lock


def run(args) -> None:
    import torch

    from featprune_ext.study.runner import evaluate
    from featprune_ext.study.scorer import Scorer

    torch.set_num_threads(args.threads)
    work, data = Path(args.work), Path(args.work) / "data"
    grid = cells(args.models)
    for c in reversed(grid) if args.reverse else grid:
        name = cell_name(c)
        edir = work / "eval" / c["model"]
        done = [edir / f"{name}.{task}.{lang}.json" for task, lang in evaluations(c)]
        if all(p.exists() for p in done):
            continue
        edir.mkdir(parents=True, exist_ok=True)
        held = claim(edir / name)
        if held is None:
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {c['model']} {name}: eval on {','.join(c['eval'])}", flush=True)
        src = model_src(c["model"])
        info = {}
        path = src
        if c["method"] != "dense":
            path = work / "models" / f"{c['model']}-{name}"
            info = prune_cell(c, src, path, data)
            print(f"    pruned in {info['prune_s']} s", flush=True)
        scorer = Scorer(path, threads=args.threads, progress=False)
        for task, lang in evaluations(c):
            dest = edir / f"{name}.{task}.{lang}.json"
            if dest.exists():
                continue
            res = evaluate(path, task, [lang], data=data, limit=TASKS[task], scorer=scorer, progress=False,
                           n_boot=1000)
            res["cell"] = {**c, "name": name, **info}
            tmp = dest.with_suffix(".tmp")
            tmp.write_text(json.dumps(res))
            tmp.replace(dest)
            print(f"    {task} {lang}: {res['timings']['total_s']:.0f} s", flush=True)
        del scorer
        if c["method"] != "dense":
            shutil.rmtree(path, ignore_errors=True)
        held.release()


# ------------------------------------------------------------------------------------------ analysis
def primary(task: str, items: list[dict]):
    """The pre-registered per-item primary metric, on the first TASKS[task] items: the selection is
    a prefix of one seeded order, so a cell run with a larger limit holds the same first items."""
    import numpy as np

    items = items[: TASKS[task]]
    if task == "translation-choice":
        return np.array([it["correct_alt"] for it in items], dtype=float)
    if task == "translate":
        return np.array([it["chrf"] for it in items], dtype=float)
    return np.array([[it["nll"], it["tokens"]] for it in items], dtype=float)


def summary_value(task: str, x) -> float:
    if task == "ppl":
        return float(x[:, 0].sum() / x[:, 1].sum())
    return float(x.mean() * (100 if task == "translation-choice" else 1))


def secondary(task: str, items: list[dict]) -> dict:
    """Reported, never used for a conclusion: corpus chrF and BLEU; accuracy under the summed score."""
    from featprune_ext.study import metrics

    if task == "translate":
        hyps, refs = [it["hyp"] for it in items], [it["ref"] for it in items]
        return {"chrf_corpus": metrics.chrf(hyps, refs), "bleu": metrics.bleu(hyps, refs)}
    if task == "translation-choice":
        return {"acc_summed": 100 * sum(it["correct"] for it in items) / len(items)}
    return {}


def load(work: Path) -> dict:
    """(model, cell name, task) -> result JSON with every language evaluated so far."""
    out = {}
    for p in sorted((work / "eval").glob("*/*.json")):
        name, task, _lang = p.name[: -len(".json")].rsplit(".", 2)
        r = json.loads(p.read_text())
        key = (p.parent.name, name, task)
        if key in out:
            out[key]["languages"].update(r["languages"])
        else:
            out[key] = r
    return out


def paired(task: str, a_items: list[dict], b_items: list[dict], seed: int = 0) -> dict:
    """a - b on the items both have: exact McNemar for accuracy, paired bootstrap otherwise."""

    from featprune_ext.study import metrics

    ib = {it["id"]: it for it in b_items[: TASKS[task]]}
    pairs = [(it, ib[it["id"]]) for it in a_items[: TASKS[task]] if it["id"] in ib]
    xa = primary(task, [p[0] for p in pairs])
    xb = primary(task, [p[1] for p in pairs])
    diff = summary_value(task, xa) - summary_value(task, xb)
    if task == "translation-choice":
        mc = metrics.mcnemar_exact(xa.astype(bool), xb.astype(bool))
        boot = metrics.paired_bootstrap(xa, xb, "mean", n_boot=N_BOOT, seed=seed)
        lo, hi = (100 * v for v in boot["ci"])
        return {"n": len(pairs), "diff": diff, "ci": [lo, hi], "p": mc["p_value"], "test": "exact McNemar",
                "discordant": [mc["a_only"], mc["b_only"]]}
    stat = "nll" if task == "ppl" else "mean"
    boot = metrics.paired_bootstrap(xa, xb, stat, n_boot=N_BOOT, seed=seed)
    return {"n": len(pairs), "diff": diff, "ci": list(boot["ci"]), "p": boot["p_value"], "test": "paired bootstrap"}


def analyze(args) -> None:
    import numpy as np

    from featprune_ext.study import metrics

    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = load(work)
    all_cells = cells(args.models)
    missing = sorted({f"{c['model']}/{cell_name(c)}@{lang}" for c in all_cells for task, lang in evaluations(c)
                      if lang not in res.get((c["model"], cell_name(c), task), {"languages": {}})["languages"]})
    rows, tests = [], []
    for (model, name, task), r in sorted(res.items()):
        cell = r.get("cell", {})
        for lang, s in r["languages"].items():
            x = primary(task, s["items"])
            ci = metrics.bootstrap_ci(x, "ppl" if task == "ppl" else "mean", n_boot=1000, seed=0)
            if task == "ppl":
                ci = [float(np.log(v)) for v in ci]  # nats per token
            scale = 100 if task == "translation-choice" else 1
            rows.append({"model": model, "cell": name, "method": cell.get("method", "dense"),
                         "calib_lang": cell.get("lang"), "sparsity": cell.get("sparsity", 0.0), "task": task,
                         "lang": lang, "n": len(x), "value": summary_value(task, x),
                         "ci": [scale * v for v in ci] if task != "ppl" else ci,
                         **secondary(task, s["items"][: TASKS[task]])})
    # the pre-registered comparisons: same model, language, sparsity and task
    for model in args.models:
        for task in TASKS:
            for a, b in COMPARISONS:
                family = []
                for sp in SPARSITIES:
                    for lang in LANGS:
                        an = f"{a}-{lang}-s{int(sp * 100)}"
                        bn = {"dense": "dense", "magnitude": f"magnitude-s{int(sp * 100)}"}.get(
                            b, f"{b}-{lang}-s{int(sp * 100)}")
                        ra, rb = res.get((model, an, task)), res.get((model, bn, task))
                        if not ra or not rb or lang not in ra["languages"] or lang not in rb["languages"]:
                            continue
                        t = paired(task, ra["languages"][lang]["items"], rb["languages"][lang]["items"])
                        family.append({"model": model, "task": task, "a": a, "b": b, "lang": lang, "sparsity": sp,
                                       **t})
                # cross-lingual: the fr-en model on other languages, against mono:fr there (the transfer
                # question) or dense; each joins the family of its comparison
                cross_b = {("mt", "mono"): "mono-fr", ("mt", "dense"): "dense"}.get((a, b))
                for sp in SPARSITIES if cross_b else []:
                    an = f"mt-fr-s{int(sp * 100)}"
                    bn = cross_b if cross_b == "dense" else f"{cross_b}-s{int(sp * 100)}"
                    for lang in CROSS:
                        ra, rb = res.get((model, an, task)), res.get((model, bn, task))
                        if not ra or not rb or lang not in ra["languages"] or lang not in rb["languages"]:
                            continue
                        t = paired(task, ra["languages"][lang]["items"], rb["languages"][lang]["items"])
                        family.append({"model": model, "task": task, "a": "mt-fr", "b": cross_b, "lang": lang,
                                       "sparsity": sp, "cross": True, **t})
                if family:
                    for t, adj in zip(family, metrics.holm([t["p"] for t in family])):
                        t["p_holm"] = adj
                        t["family_size"] = len(family)
                    tests += family
    summary = {"design": {"langs": LANGS, "cross": CROSS, "sparsities": SPARSITIES, "tasks": TASKS,
                          "comparisons": COMPARISONS, "n_boot": N_BOOT},
               "missing_cells": missing, "cells": rows, "tests": tests}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "tables.md").write_text(tables_md(rows, tests, missing))
    archive_items(work, out / ITEMS_ARCHIVE)

    import paper_design_plots as plots  # beside this script

    plots.plot(rows, out, TASKS, LANGS, CROSS)
    plots.plot_paper_question(paper_question(tests), out, LANGS)
    print(f"{len(rows)} cell-language results, {len(tests)} tests, {len(missing)} cells missing -> {out}")


ITEMS_ARCHIVE = "eval-items.tar.xz"


def archive_items(work: Path, dest: Path) -> None:
    """Every per-item evaluation JSON the analysis read, in one archive beside its tables, so the
    analysis can be rerun from the repository (`tar -xJf ITEMS_ARCHIVE -C WORK`, then
    `analyze --work WORK`) and the hours of evaluation survive the work directory."""
    import tarfile

    tmp = dest.with_name(dest.name + ".tmp")
    with tarfile.open(tmp, "w:xz") as tar:
        for p in sorted((work / "eval").glob("*/*.json")):
            info = tar.gettarinfo(p, arcname=str(p.relative_to(work)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""  # same files, same bytes
            with p.open("rb") as f:
                tar.addfile(info, f)
    tmp.replace(dest)


def decision(t: dict) -> str:
    """The pre-registered rule: an ordering only where the Holm-adjusted p < 0.05, with its sign."""
    if t["p_holm"] >= 0.05:
        return "no difference detected"
    a_better = t["diff"] < 0 if t["task"] == "ppl" else t["diff"] > 0  # ppl: fewer nats per token is better
    return f"{t['a'] if a_better else t['b']} better"


def paper_question(tests: list[dict]) -> list[dict]:
    """The tests of the paper's question: mt:X-en against mono:X, and the French models elsewhere."""
    return [t for t in tests if t["a"] in ("mt", "mt-fr") and t["b"] in ("mono", "mono-fr")]


def tables_md(rows: list[dict], tests: list[dict], missing: list[str]) -> str:
    from featprune_ext.tables import markdown_table

    unit = {"translate": "sentence chrF", "translation-choice": "accuracy % (per-token score)",
            "ppl": "nats per token"}
    parts = []
    for task in TASKS:
        sel = [r for r in rows if r["task"] == task]
        if not sel:
            continue
        body = [[r["model"], r["cell"], r["lang"], str(r["n"]), f"{r['value']:.2f}",
                 f"[{r['ci'][0]:.2f}, {r['ci'][1]:.2f}]"] for r in sel]
        parts.append(f"### {task}: {unit[task]}\n\n"
                     + markdown_table(["model", "cell", "lang", "n", "value", "95% CI"], body))
    paper = paper_question(tests)
    if paper:
        order = {lang: i for i, lang in enumerate(LANGS)}
        paper.sort(key=lambda t: (t["model"], list(TASKS).index(t["task"]), t.get("cross", False),
                                  order[t["lang"]], -t["sparsity"]))
        body = [[t["model"], t["task"], t["lang"] + (" (fr-calibrated)" if t.get("cross") else ""),
                 f"{t['sparsity']:.0%}", str(t["n"]), f"{t['diff']:+.2f}", f"[{t['ci'][0]:+.2f}, {t['ci'][1]:+.2f}]",
                 f"{t['p_holm']:.3f}", decision(t)] for t in paper]
        parts.append("### The paper's question: mt:X-en minus mono:X (Holm within model x task)\n\n"
                     "ppl: nats per token, negative = mt better; translate: chrF; translation-choice: points.\n\n"
                     + markdown_table(["model", "task", "evaluated on", "sparsity", "n", "mt - mono", "95% CI",
                                       "p Holm", "decision"], body))
    sel = tests
    if sel:
        body = [[t["model"], t["task"], f"{t['a']} - {t['b']}", t["lang"], f"{t['sparsity']:.1f}", str(t["n"]),
                 f"{t['diff']:+.2f}", f"[{t['ci'][0]:+.2f}, {t['ci'][1]:+.2f}]", f"{t['p']:.4f}",
                 f"{t['p_holm']:.4f}", decision(t)] for t in sel]
        parts.append("### Paired tests (Holm within model x task x comparison)\n\n" + markdown_table(
            ["model", "task", "comparison", "lang", "sparsity", "n", "a - b", "95% CI", "p", "p Holm", "decision"],
            body))
    if missing:
        parts.append("### Cells not run yet\n\n" + ", ".join(missing))
    return "\n\n".join(parts) + "\n"


FEATURE_LANGS = ["en", "fr", "zh_CN", "hi"]


def features(args) -> None:
    import csv
    import math

    from featprune_ext.study.analysis import analyze as analyze_features

    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for model in args.models:
        adir = work / f"features-{model}"
        if not (adir / "analysis.json").exists():
            analyze_features(model_src(model), adir, langs=FEATURE_LANGS, data=work / "data", nsamples=20,
                             threads=args.threads, progress=False)
        summary = json.loads((adir / "analysis.json").read_text())
        buckets = summary["calibration"]["buckets"]
        with open(adir / "magnitudes.csv", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))[1:]
        mags = {(r[0], int(r[1])): [float(v) for v in r[2:]] for r in rows}
        result = {}
        for lang in FEATURE_LANGS[1:]:
            mt, mono = buckets[f"mt:{lang}-en"], buckets[f"mono:{lang}"]
            expected = math.sqrt((mt["tokens"] / mt["samples"]) / (mono["tokens"] / mono["samples"]))
            median, top = [], []
            for layer in range(summary["layers"]):
                a, b = mags[(f"mt:{lang}-en", layer)], mags[(f"mono:{lang}", layer)]
                ratios = sorted(x / y for x, y in zip(a, b) if y > 0)
                median.append(ratios[len(ratios) // 2])
                i = max(range(len(a)), key=a.__getitem__)
                top.append(a[i] / b[i])
            result[lang] = {"sqrt_token_ratio": expected, "median_feature_ratio": [min(median), max(median)],
                            "top_feature_ratio": [min(top), max(top)]}
            print(f"{model} {lang}: mt/mono magnitude, median feature {min(median):.2f}-{max(median):.2f} over layers, "
                  f"top mt feature {min(top):.2f}-{max(top):.2f}; sqrt(tokens per mt sample / per mono sample) "
                  f"= {expected:.2f}")
        (out / f"features-{model}.json").write_text(json.dumps(result, indent=1))
        for name in ("mt_vs_mono_features.png", "overlap_top-top_r30_mean.png", "overlap_top-bottom_r30_mean.png"):
            shutil.copyfile(adir / name, out / f"{model}-{name}")


def masks(args) -> None:
    import paper_design_masks  # beside this script
    import torch

    torch.set_num_threads(args.threads)
    paper_design_masks.compare(Path(args.work), Path(args.out), args.models, args.langs, 0.5, prune_cell, model_src)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=("run", "analyze", "features", "masks"))
    p.add_argument("--work", default="/tmp/fp_paper")
    p.add_argument("--models", nargs="+", default=["gemma3", "smollm2"], choices=["gemma3", "smollm2"])
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the 2 cores are shared)")
    p.add_argument("--out", default=str(Path(__file__).parent / "paper-design"))
    p.add_argument("--langs", nargs="+", default=["fr", "hi"], help="masks: the calibration languages compared")
    p.add_argument("--reverse", action="store_true", help="run: walk the grid from its last cell")
    args = p.parse_args()
    {"run": run, "analyze": analyze, "features": features, "masks": masks}[args.stage](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
