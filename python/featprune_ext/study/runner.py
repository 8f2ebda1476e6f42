"""Zero-shot and few-shot evaluation of a (pruned) causal LM: the paper's tasks, offline.

Tasks (each item is scored per language; every per-item result is kept in the JSON so two runs
can be compared item by item):

* ``ppl``                 perplexity of held-out sentences (the evaluation split of ``--data``),
                          each scored on its own after the start token.
* ``translation-choice``  "pick the correct translation": ``English: {src}\\n{Language}:`` followed
                          by 4 candidates (the reference and 3 other evaluation-split translations),
                          ranked by summed log-likelihood; chance 0.25.
* ``xnli``                premise/hypothesis/label (0 entailment, 1 neutral, 2 contradiction) JSONL;
                          ``{premise} , right? {Yes|Also|No} , {hypothesis}`` ranked by mean token
                          log-probability of the whole sequence (the paper's code; ``template=
                          "harness"`` uses lm-eval-harness's per-language words instead).
* ``marc``                amazon_reviews_multi JSONL (review_body, stars 1-5), binary as in the
                          paper: 3 stars dropped, 1-2 negative, 4-5 positive; ``{first 128 words}
                          It is {negative|positive}`` ranked like xnli.
* ``translate``           few-shot X->English generation (greedy), chrF and BLEU via sacrebleu.

Each choice task also reports ``acc_alt`` (the other length convention: per-token mean for
translation-choice, summed continuation log-prob for xnli/marc). RankC consistency is computed
against English (or the first language) over items whose candidate sets match.

Data and item selection: tasks.py; the model: scorer.py; comparing two results: compare.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from .._version import versions
from ..data import corpora
from ..data.languages import Language, resolve
from ..hub import model_label, resolve_model
from ..tables import markdown_table
from . import metrics, tasks
from .scorer import Scorer
from .tasks import CHOICE_TASKS, TASKS, EvalError

__all__ = ["FORMAT", "evaluate", "format_table", "load_results"]

FORMAT = "featprune-eval"


# ================================================================================= one language
def _chance(task: str, items: list[dict]) -> Optional[float]:
    if task in CHOICE_TASKS and items:
        return float(np.mean([1 / len(it["candidates"]) for it in items]))
    return None


def _summary_choice(items: list[dict], n_boot: int, seed: int) -> dict:
    correct = np.array([it["correct"] for it in items], dtype=np.float64)
    alt = np.array([it["correct_alt"] for it in items], dtype=np.float64)
    k, n = int(correct.sum()), len(items)
    return {"n": n, "correct": k, "acc": k / n,
            "acc_ci": list(metrics.bootstrap_ci(correct, "mean", n_boot=n_boot, seed=seed)),
            "acc_wilson": list(metrics.wilson_interval(k, n)), "acc_stderr": metrics.stderr_of_mean(correct),
            "acc_alt": float(alt.mean()),
            "acc_alt_ci": list(metrics.bootstrap_ci(alt, "mean", n_boot=n_boot, seed=seed))}


def _score_choices(scorer: Scorer, task: str, items: list[dict], lang: str) -> None:
    """Fill pred / correct / scores / ranking in place.

    translation-choice: primary score = summed continuation log-prob; alt = per-token mean.
    xnli / marc: primary = mean log-prob per token of the whole sequence (the paper); alt = summed
    continuation log-prob (lm-eval-harness's acc).
    """
    reqs = []
    for it in items:
        ctx = it.get("context") or f"English: {it['src']}\n{resolve(lang).name}:"
        it["context"] = ctx
        reqs += [(ctx, c if task != "translation-choice" else " " + c) for c in it["candidates"]]
        if task != "translation-choice":
            reqs.append(("", ctx))  # the context's own log-prob, shared by all candidates
    res = scorer.loglikelihood(reqs, desc=f"{task} {lang}")
    pos = 0
    for it in items:
        k = len(it["candidates"])
        cand = res[pos:pos + k]
        pos += k
        sums = [r["logprob"] for r in cand]
        means = [r["logprob"] / r["tokens"] for r in cand]
        if task == "translation-choice":
            primary, alt = sums, means
        else:
            ctx = res[pos]
            pos += 1
            primary = [(ctx["logprob"] + r["logprob"]) / (ctx["tokens"] + r["tokens"]) for r in cand]
            alt = sums
        it["scores"] = [round(s, 6) for s in primary]
        it["scores_alt"] = [round(s, 6) for s in alt]
        it["pred"] = metrics.argmax_choice(primary)
        it["correct"] = bool(it["pred"] == it["gold"])
        it["correct_alt"] = bool(metrics.argmax_choice(alt) == it["gold"])
        it["ranking"] = [it["candidate_ids"][j] for j in metrics.ranking(primary)]
        it["truncated"] = any(r["truncated"] for r in cand)
        del it["context"]


def _evaluate_language(scorer: Scorer, task: str, lang: Language, data, *, limit, seed, shots, template,
                       max_new_tokens, n_boot, pool=None) -> dict:
    code = lang.locale
    if task == "ppl":
        items = tasks.ppl_items(data, lang, limit, seed)
        if not items:
            raise EvalError(f"ppl: no {lang.name} evaluation text in {data}")
        res = scorer.loglikelihood([("", it["text"]) for it in items], desc=f"ppl {code}")
        for it, r in zip(items, res):
            it.update(nll=round(-r["logprob"], 6), tokens=r["tokens"], truncated=r["truncated"])
        arr = np.array([[it["nll"], it["tokens"]] for it in items], dtype=np.float64)
        nll, tokens = float(arr[:, 0].sum()), int(arr[:, 1].sum())
        summary = {"n": len(items), "tokens": tokens, "ppl": metrics.perplexity(nll, tokens),
                   "ppl_ci": list(metrics.bootstrap_ci(arr, "ppl", n_boot=n_boot, seed=seed)),
                   "nll_per_token": nll / tokens}
        for it in items:
            it.pop("text")  # the id identifies the sentence; the texts are in --data
        return {**summary, "items": items}
    if task == "translate":
        items, demos = tasks.translate_items(data, lang, limit, seed, shots)
        if not items:
            raise EvalError(f"translate: no evaluation-split {code}-en pairs in {data}")
        eos = scorer.tok.eos_token or "\n"
        prefix = "".join(f"{lang.name}: {s}{eos}English: {t}{eos}" for s, t in demos)
        prompts = [f"{prefix}{lang.name}: {it['src']}{eos}English:" for it in items]
        hyps = scorer.generate(prompts, max_new_tokens=max_new_tokens, desc=f"translate {code}")
        refs = [it["ref"] for it in items]
        for it, h in zip(items, hyps):
            it["hyp"] = h
            it["chrf"] = round(metrics.sentence_chrf(h, it["ref"]), 4)
        summary = {"n": len(items), "shots": len(demos)}
        for name in ("chrf", "bleu"):
            stats, fn = metrics.corpus_statistic(name, hyps, refs)
            summary[name] = float(fn(stats, np.arange(len(items))[None, :])[0])
            summary[f"{name}_ci"] = list(metrics.bootstrap_ci(stats, fn, n_boot=n_boot, seed=seed))
        summary["demonstrations"] = [{"src": s, "ref": t} for s, t in demos]
        return {**summary, "items": items}
    if task == "translation-choice":
        items = tasks.translation_choice_items(data, lang, limit, seed, pool=pool)
    elif task == "xnli":
        items = tasks.xnli_items(data, lang, limit, seed, template)
    elif task == "marc":
        items = tasks.marc_items(data, lang, limit, seed)
    else:
        raise EvalError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if not items:
        raise EvalError(f"{task}: no {lang.name} items in {data}")
    chance = _chance(task, items)
    _score_choices(scorer, task, items, code)
    for it in items:  # keep the JSON about results: texts can be rebuilt from --data and the seed
        for k in ("candidates", "src"):
            it.pop(k, None)
    return {**_summary_choice(items, n_boot, seed), "chance": chance, "items": items}


def _consistency(task: str, per_lang: dict[str, dict], reference: Optional[str]) -> Optional[dict]:
    """RankC between the reference language's and each other language's candidate rankings, over
    the items both have with the same candidate set (parallel items)."""
    if task not in CHOICE_TASKS or len(per_lang) < 2:
        return None
    langs = list(per_lang)
    ref = reference or ("en" if "en" in per_lang else langs[0])
    if ref not in per_lang:
        raise EvalError(f"consistency reference {ref!r} is not among the evaluated languages {langs}")
    ref_items = {it["id"]: it for it in per_lang[ref]["items"]}
    out = {"reference": ref, "method": "RankC (Qi et al. 2023) over parallel items", "languages": {}}
    for lang in langs:
        if lang == ref:
            continue
        a, b = [], []
        for it in per_lang[lang]["items"]:
            other = ref_items.get(it["id"])
            if other is not None and sorted(other["candidate_ids"]) == sorted(it["candidate_ids"]):
                a.append(other["ranking"])
                b.append(it["ranking"])
        entry: dict[str, Any] = {"n": len(a)}
        if a:
            entry["rankc"] = metrics.rankc(a, b)
            entry["top1_agreement"] = float(np.mean([x[0] == y[0] for x, y in zip(a, b)]))
        else:
            entry["note"] = "no parallel items (different item ids or candidate sets)"
        out["languages"][lang] = entry
    return out


def _pruning_info(model_dir: Path) -> Optional[dict]:
    report = model_dir / "featprune.json"
    if not report.is_file():
        return None
    try:
        r = json.loads(report.read_text())
    except (OSError, ValueError):
        return None
    calib = r.get("calibration") or {}
    return {"method": r.get("method"), "sparsity": r.get("sparsity"), "pattern": r.get("pattern"),
            "overall_sparsity": r.get("overall_sparsity"), "calibration": calib.get("spec")}


# ====================================================================================== a model
def evaluate(model_dir, task: str, langs: Sequence[str], data=None, *, limit: Optional[int] = None, seed: int = 0,
             seqlen: int = 512, device: str = "cpu", dtype: str = "float32", shots: int = 4,
             template: str = "paper", max_new_tokens: int = 64, n_boot: int = 1000, batch_tokens: int = 1024,
             threads: Optional[int] = None, consistency_ref: Optional[str] = None, parallel: bool = False,
             progress: bool = True, scorer: Optional[Scorer] = None) -> dict:
    """Evaluate one model on one task in several languages; returns the JSON-ready result.

    parallel (translation-choice): use only English sentences translated into every language in
    `langs`, so all languages get the same items with the same candidates (full RankC coverage).
    """
    if task not in TASKS:
        raise EvalError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if not langs:
        raise EvalError("no languages given (--langs fr,es,...)")
    try:
        languages = [resolve(code) for code in langs]
    except ValueError as exc:
        raise EvalError(str(exc)) from None
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise EvalError(f"limit must be a positive integer, got {limit!r}")
    tasks.check_data(data, task)  # before the (slow) model load (or a download)
    name, model_dir = model_label(model_dir), resolve_model(model_dir)
    if not model_dir.is_dir():
        raise EvalError(f"model directory does not exist: {model_dir}")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    if scorer is None:
        scorer = Scorer(model_dir, device=device, dtype=dtype, seqlen=seqlen, batch_tokens=batch_tokens,
                        threads=threads, progress=progress)
    pool = None
    if parallel:
        if task != "translation-choice":
            raise EvalError(f"parallel applies to translation-choice (xnli items are parallel by line), not {task}")
        pool = set.intersection(*(set(tasks.translation_choice_pairs(data, lang)) for lang in languages))
    per_lang: dict[str, dict] = {}
    timings = {"load_s": round(scorer.load_s, 3)}
    for lang in languages:
        t = time.perf_counter()
        per_lang[lang.locale] = _evaluate_language(scorer, task, lang, data, limit=limit, seed=seed, shots=shots,
                                                   template=template, max_new_tokens=max_new_tokens, n_boot=n_boot,
                                                   pool=pool)
        timings[lang.locale] = round(time.perf_counter() - t, 3)
    timings["total_s"] = round(time.perf_counter() - t0, 3)
    return {
        "format": FORMAT, "version": 1, "task": task, "model": str(model_dir.resolve()), "name": name,
        "pruning": _pruning_info(model_dir),
        "settings": {"langs": list(per_lang), "data": corpora.describe_source(data),
                     "limit": limit, "seed": seed, "seqlen": seqlen, "device": str(scorer.device), "dtype": dtype,
                     "shots": shots if task == "translate" else None,
                     "template": template if task == "xnli" else None, "bootstrap": n_boot,
                     "parallel_pool": None if pool is None else len(pool),
                     "fast_head": scorer.fast_head, "scoring": _scoring_note(task)},
        "languages": per_lang,
        "consistency": _consistency(task, per_lang, consistency_ref),
        "timings": timings, "versions": versions(),
    }


def _scoring_note(task: str) -> str:
    return {
        "ppl": "exp(total nll / tokens) over evaluation-split sentences, each scored after the start token",
        "translation-choice": "acc: summed log-prob of each candidate after 'English: {src}\\n{Language}:'; "
                              "acc_alt: per-token mean",
        "xnli": "acc: mean token log-prob of the whole sequence (the paper's code); acc_alt: summed log-prob "
                "of the candidate continuation (lm-eval-harness)",
        "marc": "acc: mean token log-prob of the whole sequence (the paper's code); acc_alt: summed log-prob "
                "of ' negative'/' positive'",
        "translate": "greedy decoding after fixed calibration-split demonstrations; corpus chrF and BLEU (sacrebleu)",
    }[task]


# ===================================================================== tables and saved results
def _fmt_ci(summary: dict, key: str, pct: bool) -> str:
    v, ci = summary[key], summary.get(f"{key}_ci")
    scale = 100 if pct else 1
    digits = 1 if pct or key in ("chrf", "bleu") else 2
    if ci is None:
        return f"{v * scale:.{digits}f}"
    return f"{v * scale:.{digits}f} [{ci[0] * scale:.{digits}f}, {ci[1] * scale:.{digits}f}]"


def format_table(result: dict) -> str:
    """Markdown: one row per language with the task's numbers and 95% bootstrap intervals."""
    task = result["task"]
    if task == "ppl":
        head = ["lang", "n", "tokens", "ppl [95% CI]"]
        rows = [[lang, s["n"], s["tokens"], _fmt_ci(s, "ppl", False)] for lang, s in result["languages"].items()]
    elif task == "translate":
        head = ["lang", "n", "chrF [95% CI]", "BLEU [95% CI]"]
        rows = [[lang, s["n"], _fmt_ci(s, "chrf", False), _fmt_ci(s, "bleu", False)]
                for lang, s in result["languages"].items()]
    else:
        head = ["lang", "n", "acc % [95% CI]", "acc_alt %", "chance %"]
        rows = [[lang, s["n"], _fmt_ci(s, "acc", True), f"{100 * s['acc_alt']:.1f}", f"{100 * (s['chance'] or 0):.0f}"]
                for lang, s in result["languages"].items()]
        cons = result.get("consistency")
        if cons:
            head.append(f"RankC vs {cons['reference']}")
            for row in rows:
                c = cons["languages"].get(row[0])
                row.append("(reference)" if row[0] == cons["reference"] else
                           f"{c['rankc']:.3f} (n={c['n']})" if c and "rankc" in c else "n/a")
    return markdown_table(head, rows)


def load_results(path) -> dict:
    p = Path(path)
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvalError(f"results file not found: {p}") from None
    except (OSError, ValueError) as exc:
        raise EvalError(f"cannot read results file {p}: {exc}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise EvalError(f"{p} is not a featprune eval JSON (format {FORMAT!r})")
    return obj
