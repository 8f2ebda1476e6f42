"""Adam recovery settings for `mlp=0.25`, in memory: held-out perplexity per setting.

Each run cuts the model (--model: smollm2, gemma3 or a directory) with
`featprune_ext.structured.prune_in_memory` (score wanda, recovery adam with
the given steps, peak learning rate, target, tokens kept for the fit and seed; everything else `Options()`'s
defaults) on the bench's calibration (`mt:fr-en`, --nsamples x 256 tokens, 4 shots, seed 0; the default 32
samples are the bench's, 128 the CLI's default count) and measures perplexity on the bench's
held-out English and French prose (bench_structured.heldout_batches: the last 8 x 256 tokens of
dataset-build's eng/fra files). One intra-op thread. Appends one JSON line per run to --out.

    python bench/sweep_structured_recovery.py --out bench/structured_recovery_sweep.jsonl --nsamples 128 --steps 80
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_structured as bs  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--spec", default="mlp=0.25")
    p.add_argument("--steps", type=int, help="default: Options()' (80-160 by the kept tokens)")
    p.add_argument("--lr", type=float, default=0.01, help="peak, relative to each matrix's RMS")
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--target", default="model", choices=("model", "block"))
    p.add_argument("--nsamples", type=int, default=32)
    p.add_argument("--fit-tokens", type=int, help="default: Options()'")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from featprune_ext.data.calibration import build_calibration
    from featprune_ext.engine import make_batches, pad_id_for
    from featprune_ext.structured import Options, parse_spec, prune_in_memory, read_checkpoint, validate

    src = bs.model_dir(args.model)
    tok = AutoTokenizer.from_pretrained(src)
    hf_config = AutoConfig.from_pretrained(src)
    cal = build_calibration("mt:fr-en", tok, nsamples=args.nsamples, seqlen=256, shots=4, seed=0)
    batches = make_batches(cal, 8, pad_id_for(hf_config, hf_config.vocab_size))
    held = {lang: bs.heldout_batches(tok, code, 8, 256) for lang, code in (("en", "eng"), ("fr", "fra"))}
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    fit = {} if args.fit_tokens is None else {"fit_tokens": args.fit_tokens}
    opts = Options(recovery="adam", adam_steps=args.steps, adam_lr=args.lr, adam_tokens=args.tokens,
                   target=args.target, seed=args.seed, **fit)
    t0 = time.time()
    prune_in_memory(model, read_checkpoint(src), json.loads((src / "config.json").read_text()),
                    validate(parse_spec(args.spec), hf_config), batches, cal.bucket_names, opts)
    result = {"model": args.model, "spec": args.spec, "nsamples": args.nsamples, "calibration_tokens": cal.num_tokens,
              "steps": args.steps, "lr": args.lr, "tokens": args.tokens, "fit_tokens": opts.fit_tokens,
              "seed": args.seed, "target": args.target,
              "ppl": {k: round(bs.perplexity(model, v), 4) for k, v in held.items()},
              "wall_s": round(time.time() - t0)}
    print(json.dumps(result), flush=True)
    with open(args.out, "a") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
