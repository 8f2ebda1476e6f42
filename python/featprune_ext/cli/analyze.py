"""``featprune analyze``: hidden-state feature magnitudes and top/bottom feature overlaps.

    featprune analyze MODEL --calib 'mono:fr+mt:fr-en' --data DIR --out DIR
    featprune analyze MODEL --langs en,fr,es,zh,ru,ja,hi --data DIR --out DIR   # mono:L and mt:L-en each

Writes magnitudes.csv, top_features/<condition>.png (top-20 features per layer), overlap_r<pct>.csv
and overlap_{top-bottom,top-top}_r<pct>_{mean,layers}.png (overlap needs two or more conditions),
analysis.json; prints a summary table.
"""

from __future__ import annotations

import argparse

from ..study.analysis import AnalysisError, analyze, format_summary
from .args import MODEL_HELP

__all__ = ["add_parser"]


def add_parser(subparsers, parents) -> None:
    """Register ``analyze``."""
    p = subparsers.add_parser("analyze", parents=parents,
                              help="hidden-state feature magnitudes and overlap heatmaps (paper Figs 1-3)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help=MODEL_HELP + "; streamed block by block")
    p.add_argument("--calib", help="calibration spec; each component is one condition, e.g. 'mono:fr+mt:fr-en'")
    p.add_argument("--langs", help="instead of --calib: mono:L for each language and mt:L-en for each non-English")
    p.add_argument("--data", help="corpus for mt/mono demonstrations (calibration split), e.g. from "
                                  "`featprune data gettext`; default: this machine's gettext catalogs / dataset-build")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--nsamples", type=int, default=20,
                   help="demonstration samples per condition (the paper used 100; default %(default)s)")
    p.add_argument("--seqlen", type=int, default=512, help="tokens per sample at most (default %(default)s)")
    p.add_argument("--shots", type=int, default=4, help="sentences (pairs) per demonstration (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=4, help="samples per forward batch (default %(default)s)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--ratio", default="0.3",
                   help="comma-separated top/bottom ratios for the overlap heatmaps (default %(default)s, the paper's)")
    p.add_argument("--top", type=int, default=20, help="features per layer in the bar charts (default %(default)s)")
    p.add_argument("--no-stream", action="store_true", help="load the whole model instead of one block at a time")
    p.add_argument("--no-plots", action="store_true", help="CSV and JSON only")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    """``featprune analyze``: run the analysis, print its summary table."""
    try:
        ratios = [float(r) for r in args.ratio.split(",") if r.strip()]
    except ValueError:
        raise AnalysisError(f"--ratio must be comma-separated numbers, got {args.ratio!r}") from None
    langs = [c.strip() for c in args.langs.split(",") if c.strip()] if args.langs else None
    summary = analyze(args.model, args.out, spec=args.calib, langs=langs, data=args.data, nsamples=args.nsamples,
                      seqlen=args.seqlen, shots=args.shots, seed=args.seed, device=args.device, ratios=ratios,
                      top=args.top, batch_size=args.batch_size, stream=not args.no_stream, threads=args.threads,
                      progress=not args.no_progress, plots=not args.no_plots)
    print(format_summary(summary))
    print(f"\n{len(summary['conditions'])} conditions x {summary['layers']} layers x {summary['features']} features "
          f"in {summary['timings']['total_s']:.1f} s; wrote {args.out}")
    return 0

