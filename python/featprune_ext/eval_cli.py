"""``featprune eval`` and ``featprune compare``.

    featprune eval MODEL --task T --langs fr,es --data DIR [--limit N] [--json OUT]
    featprune eval --compare A.json B.json            paired bootstrap, item by item
    featprune compare MODEL_OR_JSON... --task T --langs ... --data DIR --out DIR

Tasks: ppl, translation-choice, xnli, marc, translate (see evaluate.py). A markdown table goes to
stdout, progress bars to stderr. Standalone: ``python -m featprune_ext.eval_cli eval ...`` or
``python -m featprune_ext.eval_cli compare ...``. ``add_parser`` registers both subcommands.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from .evaluate import (TASKS, EvalError, compare_results, evaluate, format_comparison, format_table, load_results,
                       markdown_table, primary_metric, write_json)
from .metrics import format_p

__all__ = ["add_parser", "main"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=TASKS, help="what to evaluate")
    p.add_argument("--langs", help="comma-separated languages in any code form, e.g. fr,es,zh_CN,hi")
    p.add_argument("--data", help="corpus directory (e.g. from `featprune data gettext`; its evaluation split is "
                                  "used) or, for xnli/marc, a directory of per-language JSONL files")
    p.add_argument("--limit", type=int, help="items per language (a seeded subset; default all)")
    p.add_argument("--nsamples", type=int, help="same as --limit (named like prune's option)")
    p.add_argument("--seqlen", type=int, default=512, help="longest scored sequence in tokens (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="item selection, distractors, bootstrap (default %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default %(default)s)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest on a CPU shared with other jobs)")
    p.add_argument("--batch-tokens", type=int, default=1024, help="tokens per forward batch (default %(default)s)")
    p.add_argument("--shots", type=int, default=4, help="translate: demonstrations per prompt (default %(default)s)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="translate: generation limit (default %(default)s)")
    p.add_argument("--template", default="paper", choices=("paper", "harness"),
                   help="xnli prompt: the paper's English template, or lm-eval-harness per-language words")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default %(default)s)")
    p.add_argument("--parallel", action="store_true",
                   help="translation-choice: only sentences translated into every listed language, so all "
                        "languages get the same items and candidates (RankC over every item)")
    p.add_argument("--consistency-ref", help="RankC reference language (default en if evaluated, else the first)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _configure_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="model directory (safetensors + config + tokenizer)")
    _common(p)
    p.add_argument("--json", help="write the full result (per-item results included) to this file")
    p.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"),
                   help="instead of evaluating: paired bootstrap between two saved results")
    p.set_defaults(func=_run_eval)


def _configure_compare(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", help="model directories and/or saved eval JSONs; the first is the baseline")
    _common(p)
    p.add_argument("--out", required=True, help="directory for per-model JSONs, compare.md/.json and the plot")
    p.add_argument("--names", help="comma-separated display names, one per model (default: directory names)")
    p.add_argument("--reuse", action="store_true", help="reuse OUT/<name>.<task>.json when it exists")
    p.set_defaults(func=_run_compare)


def add_parser(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    """Register ``eval`` and ``compare`` on the featprune CLI's subparsers; returns the eval parser."""
    ev = subparsers.add_parser("eval", help="evaluate a model: ppl, translation-choice, xnli, marc, translate",
                               description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _configure_eval(ev)
    cmp = subparsers.add_parser("compare", help="several models on the same evaluation: one table, one plot",
                                description="Evaluate several models (or load their eval JSONs) on the same task; "
                                            "write a table, a plot and paired bootstrap tests against the first.")
    _configure_compare(cmp)
    return ev


def _langs(args) -> list[str]:
    if not args.langs:
        raise EvalError("--langs is required (comma-separated, e.g. fr,es,zh_CN)")
    return [c.strip() for c in args.langs.split(",") if c.strip()]


def _limit(args) -> Optional[int]:
    if args.limit is not None and args.nsamples is not None and args.limit != args.nsamples:
        raise EvalError(f"--limit {args.limit} and --nsamples {args.nsamples} disagree (they mean the same)")
    return args.limit if args.limit is not None else args.nsamples


def _eval_kwargs(args) -> dict:
    return dict(limit=_limit(args), seed=args.seed, seqlen=args.seqlen, device=args.device, dtype=args.dtype,
                shots=args.shots, template=args.template, max_new_tokens=args.max_new_tokens,
                n_boot=args.bootstrap, batch_tokens=args.batch_tokens, threads=args.threads,
                consistency_ref=args.consistency_ref, parallel=args.parallel, progress=not args.no_progress)


def _run_eval(args) -> int:
    if args.compare:
        if args.model:
            raise EvalError("--compare takes two result JSONs and no MODEL")
        a, b = (load_results(p) for p in args.compare)
        cmp = compare_results(a, b, n_boot=args.bootstrap, seed=args.seed)
        print(format_comparison(cmp))
        if args.json:
            write_json(cmp, args.json)
        return 0
    if not args.model:
        raise EvalError("give a MODEL directory (or --compare A.json B.json)")
    if not args.task:
        raise EvalError(f"--task is required: one of {', '.join(TASKS)}")
    result = evaluate(args.model, args.task, _langs(args), args.data, **_eval_kwargs(args))
    print(format_table(result))
    t = result["timings"]
    print(f"\n{result['task']} on {result['name']}: {t['total_s']:.1f} s (model load {t['load_s']:.1f} s)")
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0


# ------------------------------------------------------------------------------------- compare
def _names(args, models: list[str]) -> list[str]:
    if args.names:
        names = [n.strip() for n in args.names.split(",")]
        if len(names) != len(models):
            raise EvalError(f"--names has {len(names)} names for {len(models)} models")
    else:
        names = [Path(m).stem if m.endswith(".json") else Path(m).name for m in models]
    if len(set(names)) != len(names):
        raise EvalError(f"display names must be unique, got {names}; pass --names")
    return names


def _plot(path: Path, task: str, results: list[dict], names: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key, direction = primary_metric(task)
    langs = list(dict.fromkeys(l for r in results for l in r["languages"]))
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
        chance = [results[0]["languages"][l].get("chance") for l in langs if l in results[0]["languages"]]
        if chance and chance[0]:
            ax.axhline(100 * chance[0], color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_title(f"{task}: 95% bootstrap intervals")
    ax.legend(fontsize=7, ncol=min(3, len(results) + 1))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare_table(task: str, results: list[dict], names: list[str], tests: list[Optional[dict]]) -> str:
    """Markdown: one row per model, one column per language (value [CI], and p vs the baseline)."""
    key, direction = primary_metric(task)
    scale, digits = (100, 1) if key == "acc" else (1, 2 if key == "ppl" else 1)
    langs = list(dict.fromkeys(l for r in results for l in r["languages"]))
    head = ["model"] + [f"{l} {key}" for l in langs]
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
                        f"{format_p(t['p_value'], t['n_boot'])}"
            row.append(cell)
        rows.append(row)
    n = {l: results[0]["languages"][l]["n"] for l in langs if l in results[0]["languages"]}
    tested = " (tested on nats per token, i.e. log perplexity)" if key == "ppl" else ""
    return (markdown_table(head, rows) + f"\n{direction} {key} is better; [95% bootstrap CI]; p: paired bootstrap vs "
            f"{names[0]} on common items{tested}; items per language: " + ", ".join(f"{l} {c}" for l, c in n.items()))


def _run_compare(args) -> int:
    if not args.task:
        raise EvalError(f"--task is required: one of {', '.join(TASKS)}")
    names = _names(args, args.models)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for model, name in zip(args.models, names):
        cached = out / f"{name}.{args.task}.json"
        if model.endswith(".json"):
            res = load_results(model)
        elif args.reuse and cached.is_file():
            res = load_results(cached)
            print(f"reusing {cached}", file=sys.stderr)
        else:
            res = evaluate(model, args.task, _langs(args), args.data, **_eval_kwargs(args))
            write_json(res, cached)
        if res["task"] != args.task:
            raise EvalError(f"{model} holds a {res['task']} result, not {args.task}")
        results.append(res)
    tests = [None] + [compare_results(r, results[0], n_boot=args.bootstrap, seed=args.seed) for r in results[1:]]
    table = compare_table(args.task, results, names, tests)
    print(table)
    (out / f"compare.{args.task}.md").write_text(table + "\n", encoding="utf-8")
    summary = {"task": args.task, "models": names, "baseline": names[0],
               "results": {n: {l: {k: v for k, v in s.items() if k != "items"} for l, s in r["languages"].items()}
                           for n, r in zip(names, results)},
               "consistency": {n: r.get("consistency") for n, r in zip(names, results)},
               "paired_bootstrap_vs_baseline": {n: t for n, t in zip(names[1:], tests[1:])},
               "timings": {n: r["timings"] for n, r in zip(names, results)}}
    write_json(summary, out / f"compare.{args.task}.json")
    _plot(out / f"compare.{args.task}.png", args.task, results, names)
    print(f"wrote {out}/compare.{args.task}.md, .json and .png")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m featprune_ext.eval_cli",
                                     description="Evaluate (pruned) models; compare them with paired bootstrap tests.")
    sub = parser.add_subparsers(dest="command", metavar="{eval,compare}", required=True)
    add_parser(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (EvalError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
