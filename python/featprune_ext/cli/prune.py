"""`featprune prune`: options -> featprune_ext.prune, then the report table."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from ..files import atomic_write_json
from .args import fraction, positive_int

PRUNE_EXAMPLES = """examples:
  featprune data gettext --langs fr,zh_CN --out corpus/
  featprune prune MODEL --out pruned/ --calib mt:fr-en --data corpus/ --sparsity 0.5
  featprune prune MODEL --out pruned/ --calib mt:fr-en+mt:zh-en --contrast code --protect-top 1 \\
      --data corpus/ --sparsity 0.5 --device cuda
  featprune prune MODEL --out pruned/ --calib-texts my.jsonl --pattern 2:4
  torchrun --nproc-per-node 4 -m featprune_ext.cli prune MODEL --out pruned/ --calib mt:fr-en --data corpus/ \\
      --sparsity 0.5 --device cuda
"""



def add_parser(subparsers, parents) -> None:
    from ..methods import method_names

    p = subparsers.add_parser(
        "prune", parents=parents, help="prune a local Hugging Face model block by block",
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
    p.add_argument("--shots", type=positive_int, default=4, help="demonstrations per sample (default 4, as the paper)")
    p.add_argument("--contrast", metavar="SPEC",
                   help="contrast set (e.g. code or mono:en): prune with norm = base * base / contrast "
                        "(the paper's refinement); implies --method contrastive")
    p.add_argument("--protect-top", type=float, default=0.0, metavar="P",
                   help="never prune the top P%% input features by RMS in matrices reading the hidden state")
    p.add_argument("--protect-absmax", type=float, default=None, metavar="T",
                   help="never prune input features whose max |x| reaches T (LLM.int8() used 6.0); off by default")
    p.add_argument("--nsamples", type=positive_int, default=128, help="calibration samples (default 128)")
    p.add_argument("--seqlen", type=positive_int, default=None,
                   help="tokens per sample, longer texts are cut (default: min(2048, model limit))")
    p.add_argument("--sparsity", type=fraction, default=None, help="fraction of each row to prune, e.g. 0.5")
    p.add_argument("--pattern", default=None, help="N:M semi-structured sparsity instead, e.g. 2:4")
    p.add_argument("--method", default="wanda", choices=method_names(), help="default: wanda")
    p.add_argument("--seed", type=int, default=0, help="sample selection and random-mask seed (default 0)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                   help="dtype of the forward passes (default: the checkpoint's storage dtype); statistics are "
                        "accumulated in fp32/fp64 and weights are written back in their stored dtype")
    p.add_argument("--batch-size", type=positive_int, default=1, help="calibration samples per forward (default 1)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT.partial")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel calibration across the ranks of a torchrun launch (implied under torchrun): "
                        "torchrun --nproc-per-node N -m featprune_ext.cli prune ...")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", metavar="FILE", help="also write the run's summary (featprune.json) to FILE")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..api import prune
    from ..engine import format_report_table
    from ..engine.distributed import init_distributed, launched_by_torchrun

    if args.distributed and not launched_by_torchrun():
        raise InputError("--distributed needs a torchrun launch (it sets RANK and WORLD_SIZE), e.g. "
                         "torchrun --nproc-per-node 2 -m featprune_ext.cli prune ...")
    dist = init_distributed(args.device)
    try:
        report = prune(args.model_dir, args.out, method=args.method, sparsity=args.sparsity, pattern=args.pattern,
                       calib=args.calib, calib_texts=args.calib_texts, data=args.data, contrast=args.contrast,
                       nsamples=args.nsamples, seqlen=args.seqlen, shots=args.shots, seed=args.seed,
                       protect_top=args.protect_top, protect_absmax=args.protect_absmax, device=args.device,
                       batch_size=args.batch_size, dtype=args.dtype, resume=args.resume,
                       progress=not (args.no_progress or args.quiet), dist=dist)
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
