"""`featprune prune --structured` through the streaming engine on a real model, against the dense model and an
unstructured Wanda run on the same calibration: parameters, peak RSS of each run, held-out perplexity (en, fr)
and greedy decode work per token (CPU seconds with one thread, dense and cut interleaved in this one process,
so the load of other processes on a shared machine does not enter the ratio).

    .venv/bin/python bench/bench_structured_engine.py --json bench/structured_engine_smollm2.json \
        --work /tmp/st_engine --spec mlp=0.25 --arm "tokens256=--recovery-tokens 256" \
        --arm "adam200=--recovery-steps 200 --recovery-tokens 256" --arm "tokens1024=--recovery-tokens 1024"

Runs, in order (each `featprune prune`, a subprocess; results appended to the JSON as they finish):
  wanda:     --sparsity 0.5 (the unstructured baseline for peak RSS)
  plain:     --structured SPEC --recovery none (the plain wanda score, no recovery)
  each --arm NAME="ARGS": --structured SPEC ARGS (default score and recovery, but for ARGS)
then the evaluation of the dense model and of the structured outputs, and decode work per token of the
first --arm against dense (a rerun skips the runs already in the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_structured import heldout_batches, model_dir, params_of, perplexity  # noqa: E402
from structured_measure import decode_cpu_ratio  # noqa: E402


def prune(src: Path, out: Path, calib: list[str], extra: list[str]) -> dict:
    """One `featprune prune` run: its command, wall seconds, the OS's max RSS of the process, featprune.json's."""
    featprune = str(Path(sys.executable).parent / "featprune")
    cmd = [featprune, "prune", str(src), "--out", str(out), *calib, "--no-progress", "--quiet", *extra]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with {proc.returncode}")
    report = json.loads((out / "featprune.json").read_text())
    return {"command": " ".join(["featprune", *cmd[1:]]), "wall_s": round(time.perf_counter() - t, 1),
            "max_rss_bytes": usage.ru_maxrss * 1024, "report_peak_rss_bytes": report["peak_rss_bytes"],
            "structured": {k: v for k, v in report.get("structured", {}).items() if k != "blocks"} or None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--json", required=True)
    p.add_argument("--work", required=True, help="where the pruned models go")
    p.add_argument("--spec", default="mlp=0.25")
    p.add_argument("--nsamples", type=int, default=32)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--heldout-chunks", type=int, default=8)
    p.add_argument("--decode-tokens", type=int, default=16)
    p.add_argument("--decode-rounds", type=int, default=3)
    p.add_argument("--arm", action="append", default=[], metavar='NAME="ARGS"', required=True,
                   help='a structured run, e.g. adam200="--recovery-steps 200"; the first is timed for decode')
    args = p.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src, work, out_path = model_dir(args.model), Path(args.work), Path(args.json)
    work.mkdir(parents=True, exist_ok=True)
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    calib = ["--calib", "mt:fr-en", "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen), "--shots", "4"]
    results["setup"] = {"model": args.model, "spec": args.spec, "calibration": " ".join(calib),
                        "heldout": f"dataset-build eng/fra prose, last {args.heldout_chunks} x {args.seqlen} tokens",
                        "torch": torch.__version__, "cpu_count": os.cpu_count()}
    arms = {"wanda": ["--sparsity", "0.5"], "plain": ["--structured", args.spec, "--recovery", "none"]}
    for arm in args.arm:
        name, _, extra = arm.partition("=")
        arms[name] = ["--structured", args.spec, *extra.split()]
    for name, extra in arms.items():
        if name in results.get("runs", {}):
            continue
        out = work / name
        if out.exists():
            raise SystemExit(f"{out} exists: delete it or use another --work")
        results.setdefault("runs", {})[name] = prune(src, out, calib, extra)
        out_path.write_text(json.dumps(results, indent=1) + "\n")
        print(name, json.dumps(results["runs"][name]), flush=True)

    tok = AutoTokenizer.from_pretrained(src)
    held = {lang: heldout_batches(tok, code, args.heldout_chunks, args.seqlen) for lang, code in
            (("en", "eng"), ("fr", "fra"))}
    load = lambda d: AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    dense = load(src)
    evals = results.get("eval", {})
    for name in ["dense", *(a for a in arms if a != "wanda")]:
        if name in evals:
            continue
        model = dense if name == "dense" else load(work / name)
        evals[name] = {"params": params_of(model), "ppl": {k: round(perplexity(model, v), 4) for k, v in held.items()}}
        print(name, json.dumps(evals[name]), flush=True)
    prompt = tok("English: The file could not be opened.\nFrench:", return_tensors="pt")["input_ids"]
    first = args.arm[0].partition("=")[0]
    if "decode_cpu" not in evals[first]:
        evals[first]["decode_cpu"] = decode_cpu_ratio(dense, load(work / first), prompt, args.decode_tokens,
                                                      args.decode_rounds)
    results["eval"] = evals
    out_path.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(evals, indent=1))


if __name__ == "__main__":
    main()
