"""``featprune eval`` and ``featprune compare``.

    featprune eval MODEL --task T --langs fr,es --data DIR [--limit N] [--json OUT]
    featprune eval --compare A.json B.json            paired bootstrap, item by item
    featprune compare MODEL_OR_JSON... --task T --langs ... --data DIR --out DIR

Tasks: ppl, translation-choice, xnli, marc, translate (see featprune_ext/study/runner.py). A
markdown table goes to stdout, progress bars to stderr.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from ..files import atomic_write_json
from ..study.compare import compare_models, compare_results, format_comparison
from ..study.runner import evaluate, format_table, load_results
from ..study.tasks import TASKS, EvalError
from .args import MODEL_HELP

__all__ = ["add_parser"]


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
    p.add_argument("--batch-tokens", type=int, default=1024,
                   help="padded tokens per scoring batch (default %(default)s; generation batches up to 8192)")
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


def add_parser(subparsers, parents) -> None:
    """Register ``eval`` and ``compare``."""
    ev = subparsers.add_parser("eval", parents=parents,
                               help="evaluate a model: ppl, translation-choice, xnli, marc, translate",
                               description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_argument("model", nargs="?", help=MODEL_HELP)
    _common(ev)
    ev.add_argument("--json", help="write the full result (per-item results included) to this file")
    ev.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"),
                    help="instead of evaluating: paired bootstrap between two saved results")
    ev.set_defaults(func=run)

    cmp = subparsers.add_parser("compare", parents=parents,
                                help="several models on the same evaluation: one table, one plot",
                                description="Evaluate several models (or load their eval JSONs) on the same task; "
                                            "write a table, a plot and paired bootstrap tests against the first.")
    cmp.add_argument("models", nargs="+", help="model directories, hub ids (ORG/NAME) and/or saved eval JSONs; "
                                              "the first is the baseline")
    _common(cmp)
    cmp.add_argument("--out", required=True, help="directory for per-model JSONs, compare.md/.json and the plot")
    cmp.add_argument("--names", help="comma-separated display names, one per model (default: directory names)")
    cmp.add_argument("--reuse", action="store_true", help="reuse OUT/<name>.<task>.json when it exists")
    cmp.set_defaults(func=run_compare)


def _task(args) -> str:
    if not args.task:
        raise EvalError(f"--task is required: one of {', '.join(TASKS)}")
    return args.task


def _langs(args) -> Optional[list[str]]:
    return [c.strip() for c in args.langs.split(",") if c.strip()] if args.langs else None


def _eval_kwargs(args) -> dict:
    if args.limit is not None and args.nsamples is not None and args.limit != args.nsamples:
        raise EvalError(f"--limit {args.limit} and --nsamples {args.nsamples} disagree (they mean the same)")
    return dict(limit=args.limit if args.limit is not None else args.nsamples, seqlen=args.seqlen,
                device=args.device, dtype=args.dtype, shots=args.shots, template=args.template,
                max_new_tokens=args.max_new_tokens, batch_tokens=args.batch_tokens, threads=args.threads,
                consistency_ref=args.consistency_ref, parallel=args.parallel, progress=not args.no_progress)


def run(args) -> int:
    """``featprune eval``: one model on one task, or (--compare) two saved results."""
    if args.compare:
        if args.model:
            raise EvalError("--compare takes two result JSONs and no MODEL")
        a, b = (load_results(p) for p in args.compare)
        cmp = compare_results(a, b, n_boot=args.bootstrap, seed=args.seed)
        print(format_comparison(cmp))
        if args.json:
            atomic_write_json(args.json, cmp, sort_keys=False, mkdir=True)
        return 0
    if not args.model:
        raise EvalError("give a MODEL directory (or --compare A.json B.json)")
    task = _task(args)
    langs = _langs(args)
    if langs is None:
        raise EvalError("--langs is required (comma-separated, e.g. fr,es,zh_CN)")
    result = evaluate(args.model, task, langs, args.data, n_boot=args.bootstrap, seed=args.seed,
                      **_eval_kwargs(args))
    print(format_table(result))
    t = result["timings"]
    print(f"\n{result['task']} on {result['name']}: {t['total_s']:.1f} s (model load {t['load_s']:.1f} s)")
    if args.json:
        atomic_write_json(args.json, result, sort_keys=False, mkdir=True)
        print(f"wrote {args.json}")
    return 0


def run_compare(args) -> int:
    """``featprune compare``: several models (or saved results) side by side, tested against the first."""
    task = _task(args)
    names = [n.strip() for n in args.names.split(",")] if args.names else None
    done = compare_models(args.models, task, args.out, names=names, langs=_langs(args), data=args.data,
                          reuse=args.reuse, n_boot=args.bootstrap, seed=args.seed,
                          log=lambda msg: print(msg, file=sys.stderr), **_eval_kwargs(args))
    print(done["table"])
    print(f"wrote {args.out}/compare.{task}.md, .json and .png")
    return 0
