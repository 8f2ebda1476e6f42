"""`featprune prune`: options -> featprune_ext.prune, then the report table."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from ..files import atomic_write_json
from .args import MODEL_HELP

PRUNE_EXAMPLES = """examples:
  featprune prune MODEL --out pruned/ --calib-texts my.jsonl --sparsity 0.5
  featprune data gettext --langs fr,zh_CN --out corpus/
  featprune prune MODEL --out pruned/ --calib mt:fr-en --data corpus/ --sparsity 0.5
  featprune prune MODEL --out pruned/ --calib mt:fr-en+mt:zh-en --contrast code --protect-top 1 \\
      --data corpus/ --sparsity 0.5 --device cuda
  featprune prune MODEL --out pruned/ --calib mt:fra_Latn-eng_Latn --data flores200_dataset/ --preset paper \\
      --sparsity 0.5
  featprune prune MODEL --out pruned/ --calib-texts my.jsonl --pattern 2:4 --ignore '.*down_proj'
  featprune prune MODEL --out pruned/ --calib-texts my.jsonl --method sparsegpt --sparsity 0.5 --layerwise owl
  featprune prune MODEL --out pruned/ --method magnitude --sparsity 0.3
  torchrun --nproc-per-node 4 -m featprune_ext.cli prune MODEL --out pruned/ --calib mt:fr-en --data corpus/ \\
      --sparsity 0.5 --device cuda
"""


def add_parser(subparsers, parents) -> None:
    p = subparsers.add_parser(
        "prune", parents=parents, help="prune a Hugging Face model (a directory or a hub id) block by block",
        description="Prune every linear layer of every transformer block, streaming one block at a time, "
                    "and write a new model directory that from_pretrained loads. An option that does not apply "
                    "to the chosen method or mode is an error.",
        epilog=PRUNE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", help=MODEL_HELP)
    p.add_argument("--out", required=True, help="output directory (must not exist; built in OUT.partial first)")
    add_settings_groups(p)
    output = p.add_argument_group("run and output")
    output.add_argument("--distributed", action="store_true",
                        help="data-parallel calibration across the ranks of a torchrun launch (implied under "
                             "torchrun): torchrun --nproc-per-node N -m featprune_ext.cli prune ...")
    output.add_argument("--no-progress", action="store_true", help="no progress bar")
    output.add_argument("--json", metavar="FILE", help="also write the run's summary (featprune.json) to FILE")
    p.set_defaults(func=run)


def add_settings_groups(parser: argparse.ArgumentParser) -> None:
    """One argument group per settings concern (featprune_ext.settings), each option as declared there.
    Every default is None (or False): what was not given stays visible to the settings' checks."""
    from ..settings import CONCERNS, flag_of, options_of
    from .args import VALUE_TYPES

    for _, cls in CONCERNS:
        group = parser.add_argument_group(cls.TITLE, " ".join((cls.__doc__ or "").split()))
        for f, opt in options_of(cls):
            if not opt.cli:
                continue
            kw = {"help": opt.help, "dest": f.name}
            if opt.action == "store_true":
                group.add_argument(flag_of(f.name), action="store_true", default=None, **kw)
                continue
            if opt.action:
                kw["action"] = opt.action
            if opt.type:
                kw["type"] = VALUE_TYPES[opt.type]
            if opt.choices is not None:
                kw["choices"] = list(opt.choices() if callable(opt.choices) else opt.choices)
            if opt.metavar:
                kw["metavar"] = opt.metavar
            group.add_argument(flag_of(f.name), default=None, **kw)


def settings_options(args) -> dict:
    """The settings options the user gave (argparse namespace -> featprune_ext.prune keywords)."""
    from ..settings import CONCERNS, options_of

    names = [f.name for _, cls in CONCERNS for f, opt in options_of(cls) if opt.cli]
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def run(args, tuning=None) -> int:
    """tuning: an engine.tuning.Tuning, for benchmark drivers (bench/tuned_prune.py)."""
    from ..api import prune
    from ..engine import format_report_table
    from ..engine.distributed import init_distributed, launched_by_torchrun

    if args.distributed and not launched_by_torchrun():
        raise InputError("--distributed needs a torchrun launch (it sets RANK and WORLD_SIZE), e.g. "
                         "torchrun --nproc-per-node 2 -m featprune_ext.cli prune ...")
    dist = init_distributed(args.device or "cpu")
    try:
        report = prune(args.model_dir, args.out, progress=not (args.no_progress or args.quiet), dist=dist,
                       tuning=tuning, **settings_options(args))
    finally:
        dist.shutdown()
    if not dist.is_writer:
        return 0  # rank 0 reports
    out = Path(args.out)
    if args.json:
        atomic_write_json(args.json, report)
    if not args.quiet:
        print(format_report_table(report))
        print(f"wrote {out}")
        data = f" --data {args.data}" if args.data else " --data CORPUS_DIR"
        print(f"evaluate it: featprune eval {out} --task translation-choice --langs fr,zh_CN{data} --limit 200")
    return 0
