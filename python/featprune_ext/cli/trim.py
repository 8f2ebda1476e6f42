"""`featprune trim`: options -> featprune_ext.trim.trim, then a one-line summary."""

from __future__ import annotations

import argparse

from .args import MODEL_HELP, positive_int

TRIM_EXAMPLES = """examples:
  featprune trim MODEL --out model-es-en/ --langs es,en                  # lossless for Latin-script text
  featprune trim MODEL --out model-zh-ja-en/ --langs zh_CN,ja,en
  featprune data gettext --langs es --out corpus/
  featprune trim MODEL --out small/ --langs es,en --keep corpus --data corpus/ --max-tokens 30000
  featprune trim MODEL --out trimmed/ --langs es,en && featprune prune trimmed/ --out pruned/ ...   # then prune

--keep scripts (default) keeps every token written in the languages' scripts (plus digits, punctuation,
symbols, spaces): any text in those scripts tokenizes to the same pieces and gets the same logits.
--keep corpus keeps only the tokens the corpus uses: smaller and faster, but text outside the corpus
splits into more, less familiar pieces; the coverage of held-out corpus text is printed and recorded.
"""


def add_parser(subparsers, parents) -> None:
    p = subparsers.add_parser(
        "trim", parents=parents, help="cut the vocabulary to the languages served (lossless by default)",
        description="Write a copy of a model whose vocabulary, embedding and LM head keep only the tokens of "
                    "the given languages; every other tensor is copied byte for byte.",
        epilog=TRIM_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", help=MODEL_HELP)
    p.add_argument("--out", required=True, help="output directory (must not exist; built in OUT.partial first)")
    p.add_argument("--langs", required=True, help="comma-separated languages in any code form, e.g. es,en or "
                                                  "zh_CN,ja,en")
    p.add_argument("--keep", choices=("scripts", "corpus"), default="scripts",
                   help="scripts: every token of the languages' scripts (lossless, default); corpus: the tokens "
                        "--data/--texts produce (smaller, lossy outside the corpus)")
    p.add_argument("--data", action="append", default=[], metavar="CORPUS",
                   help="corpus mode: a corpus --calib reads (gettext output, FLORES-200, TSV/JSONL, saved "
                        "dataset, dataset-build folder; its calibration split) or a plain text file / word list "
                        "(every line); repeatable")
    p.add_argument("--texts", action="append", default=[], metavar="FILE",
                   help='corpus mode: JSONL of {"text": ...} or plain text (one text per line); repeatable')
    p.add_argument("--min-count", type=positive_int, default=None, metavar="N",
                   help="corpus mode: keep tokens produced at least N times (default 1)")
    p.add_argument("--max-tokens", type=positive_int, default=None, metavar="N",
                   help="corpus mode: at most N tokens in the trimmed vocabulary (the most frequent first)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..trim import trim

    report = trim(args.model_dir, args.out, langs=args.langs, keep=args.keep, data=args.data, texts=args.texts,
                  min_count=args.min_count, max_tokens=args.max_tokens, progress=not args.quiet)
    if not args.quiet:
        t, m = report["trim"], report["model"]
        print(f"{args.out}: {t['kept_tokens']} of {t['old_vocab_size']} tokens, "
              f"{m['params_after']:,} of {m['params_before']:,} parameters "
              f"({m['params_after'] / m['params_before']:.2f}x)")
        cov = (t.get("corpus") or {}).get("coverage")
        if cov:
            print(f"held-out corpus text ({cov['heldout_texts']} texts): {cov['words_same_pieces']:.1%} of words and "
                  f"{cov['texts_same_pieces']:.1%} of texts keep their pieces; text outside the corpus may split "
                  "into more, less familiar pieces")
    return 0
