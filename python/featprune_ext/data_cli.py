"""``featprune data ...``: build offline corpora.

``featprune data gettext --langs fr,de,es --out DIR [--extra-deb] [--eval-fraction F] [--seed S]``
extracts English->X pairs from gettext catalogs (see gettext_corpus.py) and prints pair counts per
language and split. Standalone: ``python -m featprune_ext.data_cli gettext ...``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from . import gettext_corpus

__all__ = ["add_parser", "main"]


def _configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="{gettext}", required=True)
    g = sub.add_parser("gettext", help="English->X pairs from gettext catalogs (/usr/share/locale)",
                       description="Extract filtered English->X sentence pairs from gettext catalogs into a "
                                   "corpus usable as --data. Interface strings, not prose.")
    g.add_argument("--langs", required=True,
                   help="comma-separated target languages in any code form, e.g. fr,de,es,ru,zh_CN,ja,hi")
    g.add_argument("--out", required=True, help="output directory (replaced atomically)")
    g.add_argument("--extra-deb", action="store_true",
                   help="also read libreoffice-l10n-<lang> packages (apt-get download + dpkg-deb -x; "
                        "nothing is installed)")
    g.add_argument("--eval-fraction", type=float, default=gettext_corpus.DEFAULT_EVAL_FRACTION,
                   help="fraction of English sentences held out for evaluation (default %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="seed of the calibration/evaluation split hash")
    g.add_argument("--locale-root", default=gettext_corpus.SYSTEM_LOCALE_ROOT,
                   help="where <locale>/LC_MESSAGES/*.mo live (default %(default)s)")
    g.set_defaults(func=_run_gettext)


def add_parser(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    """Register ``data`` (with its own subcommands) on the featprune CLI's subparsers."""
    parser = subparsers.add_parser("data", help="build offline corpora (gettext parallel text)",
                                   description="Build offline corpora for calibration and evaluation.")
    _configure(parser)
    return parser


def _run_gettext(args: argparse.Namespace) -> int:
    langs = [c.strip() for c in args.langs.split(",") if c.strip()]
    extra = [gettext_corpus.libreoffice_package(c) for c in langs] if args.extra_deb else []
    manifest = gettext_corpus.build_gettext_corpus(langs, args.out, extra_debs=extra,
                                                   eval_fraction=args.eval_fraction, seed=args.seed,
                                                   locale_root=args.locale_root)
    print(format_table(manifest))
    print(f"wrote {args.out}  ({manifest['caveat'].split(':')[0]})")
    return 0


def format_table(manifest: dict) -> str:
    """Pair counts per language and split, plus the multi-way (all-language) subset."""
    rows = [("language", "name", "calib", "eval", "total", "catalogs")]
    for locale, info in manifest["languages"].items():
        c = info["counts"]
        rows.append((locale, info["name"], str(c["calib"]), str(c["eval"]), str(c["total"]), str(info["catalogs"])))
    m = manifest["multiway"]
    rows.append(("(all)", "in every language", str(m["calib"]), str(m["eval"]), str(m["calib"] + m["eval"]), ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m featprune_ext.data_cli",
                                     description="Build offline corpora for calibration and evaluation.")
    _configure(parser)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
