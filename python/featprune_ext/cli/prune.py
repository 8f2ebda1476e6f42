"""`featprune prune`: options -> featprune_ext.prune, then the report table."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from ..files import atomic_write_json
from .args import MODEL_HELP, batch_size, fraction, positive_int

PRUNE_EXAMPLES = """examples:
  featprune data gettext --langs fr,zh_CN --out corpus/
  featprune prune MODEL --out pruned/ --calib mt:fr-en --data corpus/ --sparsity 0.5
  featprune prune MODEL --out pruned/ --calib mt:fr-en+mt:zh-en --contrast code --protect-top 1 \\
      --data corpus/ --sparsity 0.5 --device cuda
  featprune prune MODEL --out pruned/ --calib mt:fra_Latn-eng_Latn --data flores200_dataset/ --preset paper \
      --sparsity 0.5
  featprune prune MODEL --out pruned/ --calib-texts my.jsonl --pattern 2:4 --ignore '.*down_proj'
  featprune prune MODEL --out pruned/ --calib-texts my.jsonl --method sparsegpt --sparsity 0.5 --layerwise owl
  torchrun --nproc-per-node 4 -m featprune_ext.cli prune MODEL --out pruned/ --calib mt:fr-en --data corpus/ \\
      --sparsity 0.5 --device cuda
"""



def add_parser(subparsers, parents) -> None:
    from ..data.presets import PRESETS
    from ..methods import method_names

    p = subparsers.add_parser(
        "prune", parents=parents, help="prune a Hugging Face model (a directory or a hub id) block by block",
        description="Prune every linear layer of every transformer block, streaming one block at a time, "
                    "and write a new model directory that from_pretrained loads.",
        epilog=PRUNE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", help=MODEL_HELP)
    p.add_argument("--out", required=True, help="output directory (must not exist; built in OUT.partial first)")
    p.add_argument("--calib-texts", metavar="FILE",
                   help="your own calibration text: a .txt file (one sample per paragraph, paragraphs separated by "
                        'blank lines) or a JSONL file of {"text": ...} objects (optional "bucket" field)')
    p.add_argument("--calib", metavar="SPEC",
                   help="the paper's demonstrations: mt:fr-en (translation), mono:fr, code, texts:FILE.jsonl; "
                        "combine with + (mt:fr-en+mt:zh-en); statistics are kept per component")
    p.add_argument("--data", metavar="DIR", help="parallel/monolingual corpus for --calib: FLORES-200 dir, "
                                                  "TSV/JSONL, saved HF dataset, or `featprune data gettext` output")
    p.add_argument("--shots", type=positive_int, default=None,
                   help="demonstrations per sample (default 4, as the paper)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="paper: the paper's calibration (100 samples, 4 shots, 512 tokens, X->English "
                        "demonstrations, FLORES dev split); explicit --nsamples/--shots/--seqlen override it")
    p.add_argument("--contrast", metavar="SPEC",
                   help="contrast set (e.g. code or mono:en): prune with norm = base * base / contrast "
                        "(the paper's refinement); implies --method contrastive")
    p.add_argument("--protect-top", type=float, default=0.0, metavar="P",
                   help="never prune the top P%% input features by RMS in matrices reading the hidden state")
    p.add_argument("--protect-absmax", type=float, default=None, metavar="T",
                   help="never prune input features whose max |x| reaches T (LLM.int8() used 6.0); off by default")
    p.add_argument("--nsamples", type=positive_int, default=None,
                   help="calibration samples (default 128; 100 with --preset paper)")
    p.add_argument("--seqlen", type=positive_int, default=None,
                   help="tokens per sample, longer texts are cut (default: min(2048, model limit); 512 with "
                        "--preset paper)")
    p.add_argument("--targets", action="append", metavar="PATTERN",
                   help="prune only matching matrices (repeatable): a module class name (Linear, Conv1D, "
                        "LlamaAttention) or a regex matched with re.fullmatch against the checkpoint name without "
                        ".weight (model.layers.0.self_attn.q_proj, '.*down_proj'); default: every Linear/Conv1D in "
                        "the blocks except MoE routers")
    p.add_argument("--ignore", action="append", metavar="PATTERN",
                   help="never prune matching matrices (repeatable; same syntax as --targets); they are copied "
                        "unchanged and listed as skipped in featprune.json")
    p.add_argument("--sparsity", type=fraction, default=None, help="fraction of each row to prune, e.g. 0.5")
    p.add_argument("--pattern", default=None, help="N:M semi-structured sparsity instead, e.g. 2:4")
    p.add_argument("--method", default="wanda", choices=method_names(), help="default: wanda")
    p.add_argument("--sparsegpt-damp", type=float, default=0.01, metavar="F",
                   help="sparsegpt: dampening, a fraction of the Hessian's mean diagonal (default 0.01)")
    p.add_argument("--sparsegpt-blocksize", type=positive_int, default=128, metavar="B",
                   help="sparsegpt: columns per lazy-update block (default 128)")
    p.add_argument("--layerwise", choices=["owl"], default=None,
                   help="owl: per-block sparsity from each block's share of outlier Wanda scores (Yin et al. 2024); "
                        "one extra dense pass over the model; with --sparsity, not --pattern")
    p.add_argument("--owl-m", type=float, default=5.0, metavar="M",
                   help="owl: a score is an outlier above M x the block's mean score (default 5)")
    p.add_argument("--owl-lambda", type=float, default=0.08, metavar="L",
                   help="owl: block sparsities spread over [s - L, s + L] (default 0.08)")
    p.add_argument("--seed", type=int, default=0, help="sample selection and random-mask seed (default 0)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                   help="dtype of the forward passes (default: the checkpoint's storage dtype); statistics are "
                        "accumulated in fp32/fp64 and weights are written back in their stored dtype")
    p.add_argument("--batch-size", type=batch_size, default="auto",
                   help="calibration samples per forward pass, or auto (default): as many as keep one block's "
                        "activations under a quarter of the free memory, up to 2048 tokens per batch on CPU and "
                        "16384 on CUDA; padding never enters the statistics")
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
                       progress=not (args.no_progress or args.quiet), dist=dist, targets=args.targets,
                       ignore=args.ignore, preset=args.preset, sparsegpt_damp=args.sparsegpt_damp,
                       sparsegpt_blocksize=args.sparsegpt_blocksize, layerwise=args.layerwise, owl_m=args.owl_m,
                       owl_lambda=args.owl_lambda)
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
