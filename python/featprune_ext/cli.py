"""The `featprune` command line.

Exit codes:
  0  success
  1  runtime failure (including a full disk: free space and rerun with --resume)
  2  usage error or bad input (missing/corrupt model files, unknown architecture,
     empty calibration file, out-of-range options, an existing output directory)
  130 interrupted (Ctrl-C)

Errors are printed as one line, `featprune: error: ...`; pass -v for the traceback.

Adding a subcommand: write a module that defines `add_parser(subparsers)`; it calls
`subparsers.add_parser(name, help=...)`, adds its options and `set_defaults(func=run)`,
where `run(args) -> int` returns the exit code. Raise checkpoint.InputError for bad
input (exit 2). Then list the module in COMMAND_MODULES below; a listed module that
does not exist yet is skipped.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from .checkpoint import DiskFullError, InputError

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

COMMAND_MODULES = [
    "featprune_ext.data_cli",  # featprune data
    "featprune_ext.analysis",  # featprune analyze (forwards to analysis_cli)
    "featprune_ext.evaluate",  # featprune eval, featprune compare (forwards to eval_cli)
    "featprune_ext.demo",  # featprune demo
]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

PRUNE_EXAMPLES = """examples:
  featprune data gettext --langs fr,zh_CN --out corpus/
  featprune prune MODEL --out pruned/ --calib mt:fr-en --data corpus/ --sparsity 0.5
  featprune prune MODEL --out pruned/ --calib mt:fr-en+mt:zh-en --contrast code --protect-top 1 \\
      --data corpus/ --sparsity 0.5 --device cuda
  featprune prune MODEL --out pruned/ --calib-texts my.jsonl --pattern 2:4
  torchrun --nproc-per-node 4 -m featprune_ext.cli prune MODEL --out pruned/ --calib mt:fr-en --data corpus/ \\
      --sparsity 0.5 --device cuda
"""

MAIN_EPILOG = """exit codes: 0 success, 1 runtime failure (disk full included: rerun with --resume),
2 bad input or usage, 130 interrupted. `featprune COMMAND --help` shows each command's options and examples.
Quick start: featprune demo"""


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_prune_parser(subparsers) -> None:
    from .methods import method_names

    p = subparsers.add_parser(
        "prune", help="prune a local Hugging Face model block by block",
        description="Prune every linear layer of every transformer block, streaming one block at a time, "
                    "and write a new model directory that from_pretrained loads.",
        epilog=PRUNE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", help="local model directory (config.json, safetensors, tokenizer)")
    p.add_argument("--out", required=True, help="output directory (must not exist; built in OUT.partial first)")
    p.add_argument("--calib-texts", help='JSONL file of {"text": ...} objects, one calibration sample each '
                                         '(optional "bucket" field); needed by calibrated methods')
    p.add_argument("--calib", metavar="SPEC",
                   help="the paper's demonstrations: mt:fr-en (translation), mono:fr, code, texts:FILE.jsonl; "
                        "combine with + (mt:fr-en+mt:zh-en); statistics are kept per component")
    p.add_argument("--data", metavar="DIR", help="parallel/monolingual corpus for --calib: FLORES-200 dir, "
                                                  "TSV/JSONL, saved HF dataset, or `featprune data gettext` output")
    p.add_argument("--shots", type=_positive, default=4, help="demonstrations per sample (default 4, as the paper)")
    p.add_argument("--contrast", metavar="SPEC",
                   help="contrast set (e.g. code or mono:en): prune with norm = base * base / contrast "
                        "(the paper's refinement); implies --method contrastive")
    p.add_argument("--protect-top", type=float, default=0.0, metavar="P",
                   help="never prune the top P%% input features by RMS in matrices reading the hidden state")
    p.add_argument("--protect-absmax", type=float, default=None, metavar="T",
                   help="never prune input features whose max |x| reaches T (LLM.int8() used 6.0); off by default")
    p.add_argument("--nsamples", type=_positive, default=128, help="calibration samples (default 128)")
    p.add_argument("--seqlen", type=_positive, default=None,
                   help="tokens per sample, longer texts are cut (default: min(2048, model limit))")
    p.add_argument("--sparsity", type=_fraction, default=None, help="fraction of each row to prune, e.g. 0.5")
    p.add_argument("--pattern", default=None, help="N:M semi-structured sparsity instead, e.g. 2:4")
    p.add_argument("--method", default="wanda", choices=method_names(), help="default: wanda")
    p.add_argument("--seed", type=int, default=0, help="sample selection and random-mask seed (default 0)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--batch-size", type=_positive, default=1, help="calibration samples per forward (default 1)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT.partial")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel calibration across the ranks of a torchrun launch (implied under torchrun): "
                        "torchrun --nproc-per-node N -m featprune_ext.cli prune ...")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", metavar="FILE", help="also write the run's summary (featprune.json) to FILE")
    p.set_defaults(func=_run_prune)


def _run_prune(args) -> int:
    from pathlib import Path

    from .calibration_types import CalibrationSet, read_jsonl_texts
    from .checkpoint import Checkpoint
    from .engine import format_report_table, prune_model, validate_pattern
    from .families import max_positions
    from .methods import get_method

    sparsity, pattern = validate_pattern(args.sparsity, args.pattern)
    if args.device.split(":")[0] not in ("cpu", "cuda"):
        raise InputError(f"--device must be cpu or cuda, got {args.device!r}")
    method = _method_from_args(args, get_method)
    out = Path(args.out)
    if out.exists():
        raise InputError(f"{out} already exists; refusing to overwrite it (choose another --out or delete it)")
    ckpt = Checkpoint(args.model_dir)  # fails fast on a missing or corrupt model directory
    ckpt.close()
    calibration = None
    if method.needs_calibration:
        if not args.calib_texts and not args.calib:
            raise InputError(f"--method {method.name} needs calibration data: --calib SPEC or --calib-texts FILE.jsonl")
        if args.calib_texts and args.calib:
            raise InputError("give --calib or --calib-texts, not both (--calib texts:FILE.jsonl combines them)")
        from transformers import AutoConfig, AutoTokenizer

        try:
            config = AutoConfig.from_pretrained(args.model_dir)
        except (ValueError, KeyError, OSError) as exc:
            raise InputError(f"unknown architecture in {args.model_dir}/config.json: "
                             f"{str(exc).splitlines()[0]}") from None
        limit = max_positions(config)
        seqlen = args.seqlen or (min(2048, limit) if limit else 2048)
        if limit is not None and seqlen > limit:
            raise InputError(f"--seqlen {seqlen} is above the model's limit of {limit} positions")
        try:
            tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot load the tokenizer from {args.model_dir}: {str(exc).splitlines()[0]}") from None
        if args.calib:
            calibration = _paper_calibration(args, tokenizer, seqlen)
        else:
            texts, buckets = read_jsonl_texts(args.calib_texts)
            calibration = CalibrationSet.from_texts(texts, tokenizer, args.nsamples, seqlen, args.seed,
                                                    buckets=buckets, source=str(args.calib_texts))
        del tokenizer
    from .distributed import init_distributed, launched_by_torchrun

    if args.distributed and not launched_by_torchrun():
        raise InputError("--distributed needs a torchrun launch (it sets RANK and WORLD_SIZE), e.g. "
                         "torchrun --nproc-per-node 2 -m featprune_ext.cli prune ...")
    dist = init_distributed(args.device)
    try:
        report = prune_model(args.model_dir, out, calibration=calibration, method=method, sparsity=sparsity,
                             pattern=pattern, device=args.device, batch_size=args.batch_size, resume=args.resume,
                             progress=not (args.no_progress or args.quiet), dist=dist)
    finally:
        dist.shutdown()
    if not dist.is_writer:
        return EXIT_OK  # rank 0 reports
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    if not args.quiet:
        print(format_report_table(report))
        print(f"wrote {out}")
        data = f" --data {args.data}" if args.data else " --data CORPUS_DIR"
        print(f"evaluate it: featprune eval {out} --task translation-choice --langs fr,zh_CN{data} --limit 200")
    return EXIT_OK


def _method_from_args(args, get_method):
    """--method plus the paper's options: --contrast (contrastive norm) and outlier protection."""
    from .methods import OutlierProtection, parse_spec_components

    protection = OutlierProtection(top_percent=args.protect_top, absmax_threshold=args.protect_absmax)
    if args.contrast:
        if args.method not in ("wanda", "contrastive"):
            raise InputError(f"--contrast needs a calibrated method (wanda/contrastive), not --method {args.method}")
        if not args.calib:
            raise InputError("--contrast needs --calib SPEC for the base demonstrations")
        return get_method("contrastive", seed=args.seed, protection=protection,
                          base_buckets=parse_spec_components(args.calib),
                          contrast_buckets=parse_spec_components(args.contrast))
    if args.method == "contrastive":
        raise InputError("--method contrastive needs --contrast SPEC (e.g. --contrast code)")
    return get_method(args.method, seed=args.seed, protection=protection,
                      base_buckets=parse_spec_components(args.calib) if args.calib else None)


def _paper_calibration(args, tokenizer, seqlen: int):
    """Demonstrations from --calib (and --contrast), each spec with --nsamples samples."""
    from .calibration import build_calibration
    from .calibration_types import CalibrationSet

    def build(spec: str) -> CalibrationSet:
        try:
            return build_calibration(spec, tokenizer, data=args.data, nsamples=args.nsamples, seqlen=seqlen,
                                     shots=args.shots, seed=args.seed)
        except (ValueError, FileNotFoundError) as exc:  # bad spec, language, corpus: the user's input
            raise InputError(str(exc)) from None

    base = build(args.calib)
    if not args.contrast:
        return base
    contrast = build(args.contrast)
    names = base.bucket_names + contrast.bucket_names
    if len(set(names)) != len(names):
        raise InputError(f"--calib and --contrast share a component: {base.bucket_names} vs {contrast.bucket_names}")
    offset = len(base.bucket_names)
    return CalibrationSet(samples=base.samples + contrast.samples,
                          buckets=base.buckets + [b + offset for b in contrast.buckets], bucket_names=names,
                          summary={"base": base.describe(), "contrast": contrast.describe()})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="featprune", description="Low-memory pruning of multilingual LLMs, calibrated on translation "
                                      "demonstrations (Kim et al., 2024).",
        epilog=MAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks on errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or tables; errors only")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    _add_prune_parser(subparsers)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # not written yet
                continue
            raise
        if hasattr(module, "add_parser"):
            module.add_parser(subparsers)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("featprune: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except InputError as exc:
        code, msg = EXIT_USAGE, str(exc)
    except DiskFullError as exc:
        code, msg = EXIT_FAILURE, exc.strerror or str(exc)
    except Exception as exc:  # a runtime failure: one line unless -v
        code, msg = EXIT_FAILURE, f"{type(exc).__name__}: {exc}"
    if args.verbose:
        traceback.print_exc()
    print(f"featprune: error: {msg}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
