"""``featprune data ...``: build offline corpora.

``featprune data gettext --langs fr,de,es --out DIR [--extra-deb] [--eval-fraction F] [--seed S]``
extracts English->X pairs from gettext catalogs (see gettext_corpus.py) and prints pair counts per
language and split.
"""

from __future__ import annotations

import argparse

from ..data import gettext as gettext_corpus
from ..tables import plain_table

__all__ = ["add_parser", "format_table"]


def _configure(parser: argparse.ArgumentParser, parents) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="{gettext}", required=True)
    g = sub.add_parser("gettext", parents=parents, help="English->X pairs from gettext catalogs (/usr/share/locale)",
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


def add_parser(subparsers, parents) -> None:
    """Register ``data`` (with its own subcommands) on the featprune CLI's subparsers."""
    parser = subparsers.add_parser("data", parents=parents, help="build offline corpora (gettext parallel text)",
                                   description="Build offline corpora for calibration and evaluation.")
    _configure(parser, parents)


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
    rows = []
    for locale, info in manifest["languages"].items():
        c = info["counts"]
        rows.append([locale, info["name"], c["calib"], c["eval"], c["total"], info["catalogs"]])
    m = manifest["multiway"]
    rows.append(["(all)", "in every language", m["calib"], m["eval"], m["calib"] + m["eval"], ""])
    return plain_table(["language", "name", "calib", "eval", "total", "catalogs"], rows, right_from=2)
